//! Cross-crate tests of the workspace: architecture invariants and the registry of the repository itself.
//!
//! The tests are in `tests/*.rs`; this library is empty.
