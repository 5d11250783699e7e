//! Conformance suite every gradcast backend must pass
//!
//! Not written yet: this crate is an empty member of the workspace.
