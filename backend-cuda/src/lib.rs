//! CUDA backend of gradcast (cudarc, NVRTC)
//!
//! Not written yet: this crate is an empty member of the workspace.
