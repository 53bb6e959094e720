//! What the `fn` tests share: the good fixture registry and a deep copy of a folder.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

/// The registry of `tests/fixtures/good`.
pub(crate) fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/good")
}

/// Copies the folder `from` into `to` (made if missing), recursively.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
