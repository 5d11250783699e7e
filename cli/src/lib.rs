//! The gradcast command-line tool
//!
//! Not written yet: this crate is an empty member of the workspace.
