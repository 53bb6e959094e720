//! One problem found in the registry: a file, a line and a message.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with one registry entry or crate, printed as `path:line: message`.
///
/// `path` is relative to the registry root when the file is inside it, so the
/// output reads the same on every machine and editors can jump to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line; the first line when the problem concerns the whole file.
    pub line: usize,
    /// What is wrong, naming the field when there is one.
    pub message: String,
}

impl Problem {
    /// A problem at `line` of `path`.
    pub fn new(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            line: line.max(1),
            message: message.into(),
        }
    }

    /// A problem about a whole file (reported at line 1).
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Problem::new(path, 1, message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            display_path(&self.path),
            self.line,
            self.message
        )
    }
}

/// A path with `/` separators, for stable output.
pub fn display_path(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}
