//! What resolving or creating a file inside a root can fail with.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Resolution and creation errors.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The root directory could not be opened.
    #[error("opening root {root}")]
    Root {
        /// Root path.
        root: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// The path does not exist inside the root.
    #[error("{path} does not exist in {root}")]
    NotFound {
        /// Path inside the root.
        path: String,
        /// Root path.
        root: PathBuf,
    },
    /// The path resolves to something that is not a regular file.
    #[error("{path} in {root} is not a regular file")]
    NotAFile {
        /// Path inside the root.
        path: String,
        /// Root path.
        root: PathBuf,
    },
    /// The last component is a symlink other than the kubelet's
    /// atomic-writer layout: following it could redirect the trap.
    #[error("{path} in {root} is a symlink (refused: a trap's last component is never followed, except the kubelet's atomic-writer layout <name> -> ..data/<name>, ..data -> ..<version> in the same directory)")]
    Symlink {
        /// Path inside the root.
        path: String,
        /// Root path.
        root: PathBuf,
    },
    /// A pod's trap found its file (or the directory a decoy would be
    /// created in) on a node-shared mount.
    #[error("{path} in {root} is on a node-shared mount (hostPath, node disk or another pod's volume): {what}")]
    Shared {
        /// Path inside the root.
        path: String,
        /// Root path.
        root: PathBuf,
        /// What was refused.
        what: &'static str,
    },
    /// Any other failure, with the operation that failed.
    #[error("{op} {path} in {root}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path inside the root.
        path: String,
        /// Root path.
        root: PathBuf,
        /// OS error.
        source: io::Error,
    },
}

impl ResolveError {
    /// Whether the failure says nothing about the file itself (out of file
    /// descriptors or memory, a rename race to retry): an armed trap keeps
    /// its key rather than being disarmed.
    pub fn is_transient(&self) -> bool {
        let ResolveError::Io { source, .. } = self else {
            return false;
        };
        use rustix::io::Errno;
        Errno::from_io_error(source).is_some_and(|e| {
            [
                Errno::MFILE,
                Errno::NFILE,
                Errno::AGAIN,
                Errno::NOMEM,
                Errno::INTR,
            ]
            .contains(&e)
        })
    }
}

pub(crate) fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_errors_are_transient() {
        let io = |errno: i32| ResolveError::Io {
            op: "opening",
            path: "/f".into(),
            root: "/r".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(io(24).is_transient(), "EMFILE");
        assert!(io(11).is_transient(), "EAGAIN");
        assert!(!io(2).is_transient(), "ENOENT is about the file");
        assert!(!io(20).is_transient(), "ENOTDIR is about the file");
        let gone = ResolveError::NotFound {
            path: "/f".into(),
            root: "/r".into(),
        };
        assert!(!gone.is_transient());
    }
}
