//! OpenCL backend of gradcast (ocl, runs on PoCL)
//!
//! Not written yet: this crate is an empty member of the workspace.
