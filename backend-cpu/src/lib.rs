//! CPU backend of gradcast
//!
//! Not written yet: this crate is an empty member of the workspace.
