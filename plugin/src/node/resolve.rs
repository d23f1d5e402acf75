//! Files inside a root (the host's `/` or a container's `/proc/<pid>/root`),
//! resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` so that
//! absolute symlinks and `..` stay inside the root, never by a plain stat of a
//! joined path.
//!
//! The last component is opened with `O_NOFOLLOW`: a symlink there is never
//! followed, except the kubelet's atomic-writer layout, resolved inside its
//! own directory ([`super::atomic_writer`]); any other link refuses the
//! trap, so a link, whoever planted it, can never redirect a trap to
//! another file.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use thiserror::Error;

use super::links::links_of;
pub use super::links::{new_path_of, Links};
use super::{atomic_writer, mounts};
use crate::trap::dev::kernel_dev;
use crate::trap::TrapKey;

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

/// A directory that paths are resolved inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// `/proc/<pid>` of a process whose root this is (its mountinfo).
    pub(super) proc_dir: Option<super::procref::ProcDir>,
    /// Overlay layers by mount id (a mount's layers never change).
    pub(super) overlays: Mutex<HashMap<u64, Option<Arc<mounts::Overlay>>>>,
}

/// A resolved file, held open with `O_PATH` so that its inode (and inode
/// number) cannot be freed and reused while it is armed.
#[derive(Debug)]
pub struct PinnedFile {
    /// Held to pin the inode and to look at its links; never read. Shared
    /// by every entry armed on the same inode ([`PinnedFile::share`]): one
    /// fd per file, not per entry.
    pub(super) pin: std::sync::Arc<OwnedFd>,
    /// The file's trap key.
    pub key: TrapKey,
    /// Userspace `st_dev`.
    pub st_dev: u64,
    /// What the file looked like when last checked.
    pub seen: Links,
}

impl PinnedFile {
    /// Holds `other`'s pin instead of its own when both are the same file
    /// (same key: both pins keep the inode, so the key names one inode);
    /// its own fd is closed.
    pub fn share(&mut self, other: &PinnedFile) {
        if other.key == self.key && other.st_dev == self.st_dev {
            self.pin = std::sync::Arc::clone(&other.pin);
        }
    }
}

impl std::os::fd::AsFd for PinnedFile {
    /// The `O_PATH` fd (the fanotify tier marks the inode through it).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pin.as_fd()
    }
}

pub(crate) fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    /// Opens a root directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ResolveError> {
        let path = path.as_ref().to_path_buf();
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ResolveError::Root {
            root: path.clone(),
            source: io_err(e),
        })?;
        Ok(Self::from_fd(fd, path))
    }

    /// A root from a directory fd already open (`O_PATH | O_DIRECTORY`),
    /// shown as `path` in errors.
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Self {
        Self {
            fd,
            path,
            proc_dir: None,
            overlays: Mutex::default(),
        }
    }

    /// Names the `/proc/<pid>` directory of a process whose root this is:
    /// its mountinfo tells which files are on an overlay, whose backing
    /// files are then trapped too ([`Root::backing`]).
    pub fn with_proc_dir(mut self, proc_dir: impl Into<super::procref::ProcDir>) -> Self {
        self.proc_dir = Some(proc_dir.into());
        self
    }

    /// [`Root::with_proc_dir`] with this process's own `/proc/self` (for
    /// the root this process runs in); unchanged if it cannot be opened.
    pub fn with_own_mounts(self, proc_root: &Path) -> Self {
        match rustix::fs::open(
            proc_root.join("self"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => self.with_proc_dir(fd),
            Err(_) => self,
        }
    }

    /// The root directory's fd.
    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The root's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a directory inside the root for reading its entries (the
    /// same resolution as [`Root::resolve`]).
    pub(crate) fn open_dir(&self, path: &str) -> Result<OwnedFd, ResolveError> {
        rustix::fs::openat2(
            &self.fd,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| self.err("opening directory", path, e))
    }

    fn err(&self, op: &'static str, path: &str, e: rustix::io::Errno) -> ResolveError {
        if e == rustix::io::Errno::NOENT {
            return ResolveError::NotFound {
                path: path.to_string(),
                root: self.path.clone(),
            };
        }
        ResolveError::Io {
            op,
            path: path.to_string(),
            root: self.path.clone(),
            source: io_err(e),
        }
    }

    /// Resolves `path` inside the root to a pinned regular file. The last
    /// component is never followed as a symlink, except the atomic-writer
    /// layout ([`super::atomic_writer`]).
    pub fn resolve(&self, path: &str) -> Result<PinnedFile, ResolveError> {
        let open = |flags: OFlags| {
            rustix::fs::openat2(
                &self.fd,
                path,
                OFlags::PATH | OFlags::CLOEXEC | flags,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| self.err("resolving", path, e))
        };
        let mut fd = open(OFlags::NOFOLLOW)?;
        let mut st = rustix::fs::fstat(&fd).map_err(|e| self.err("stat of", path, e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            fd = self.atomic_writer_file(path)?;
            st = rustix::fs::fstat(&fd).map_err(|e| self.err("stat of", path, e))?;
        }
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(ResolveError::NotAFile {
                path: path.to_string(),
                root: self.path.clone(),
            });
        }
        let seen = links_of(&fd).map_err(|e| ResolveError::Io {
            op: "stat of",
            path: path.to_string(),
            root: self.path.clone(),
            source: e,
        })?;
        Ok(PinnedFile {
            pin: std::sync::Arc::new(fd),
            key: TrapKey {
                dev: kernel_dev(st.st_dev),
                ino: st.st_ino,
            },
            st_dev: st.st_dev,
            seen,
        })
    }

    /// The file behind a symlink at `path`'s last component when it is the
    /// atomic-writer layout, resolved inside the link's directory; refused
    /// otherwise.
    fn atomic_writer_file(&self, path: &str) -> Result<OwnedFd, ResolveError> {
        let refused = || ResolveError::Symlink {
            path: path.to_string(),
            root: self.path.clone(),
        };
        let (parent, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some(("", name)) => ("/", name),
            Some((p, name)) => (p, name),
            None => ("/", path),
        };
        let dir = rustix::fs::openat2(
            &self.fd,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| self.err("resolving the directory of", path, e))?;
        match atomic_writer::open(&dir, name) {
            Ok(Some(fd)) => Ok(fd),
            // a link on the way (RESOLVE_NO_SYMLINKS; O_NOFOLLOW on the
            // version: not a directory) or out of the mount
            Ok(None)
            | Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR) => {
                Err(refused())
            }
            Err(e) => Err(self.err("resolving the atomic-writer layout of", path, e)),
        }
    }

    /// Creates `path` inside the root if it does not exist (O_CREAT|O_EXCL:
    /// an existing file, or a symlink in its place, is never opened for
    /// writing, truncated or followed), sets `mode` with fchmod (umask-proof),
    /// and returns whether it created the file.
    pub fn create_if_missing(&self, path: &str, mode: u32) -> Result<bool, ResolveError> {
        let created = rustix::fs::openat2(
            &self.fd,
            path,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0),
            RESOLVE,
        );
        match created {
            Ok(fd) => {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    .map_err(|e| self.err("setting the mode of", path, e))?;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(self.err("creating", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

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

    #[test]
    fn resolves_a_file_to_its_kernel_key() {
        let d = tmp();
        std::fs::write(d.path().join("f"), "x").expect("write");
        let root = Root::open(d.path()).expect("open root");
        let p = root.resolve("/f").expect("resolve");
        let md = std::fs::metadata(d.path().join("f")).expect("stat");
        assert_eq!(p.key.ino, md.ino());
        assert_eq!(p.key.dev, kernel_dev(md.dev()));
    }

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside_the_root() {
        let d = tmp();
        let inner = d.path().join("root");
        std::fs::create_dir_all(inner.join("etc")).expect("mkdir");
        std::fs::write(inner.join("etc/passwd"), "container passwd").expect("write");
        // directory links on the way (the last component is never a link)
        symlink("/etc", inner.join("link")).expect("symlink");
        symlink("../../../../../../etc", inner.join("up")).expect("symlink");
        let root = Root::open(&inner).expect("open root");
        let want = std::fs::metadata(inner.join("etc/passwd"))
            .expect("stat")
            .ino();
        let host = std::fs::metadata("/etc/passwd").expect("host passwd").ino();
        assert_ne!(want, host);
        for path in [
            "/link/passwd",
            "/up/passwd",
            "/../../etc/passwd",
            "/etc/../../etc/passwd",
        ] {
            let p = root.resolve(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(
                p.key.ino, want,
                "{path} must resolve to the root's own file"
            );
        }
    }

    #[test]
    fn magic_links_are_refused() {
        let d = tmp();
        symlink("/proc/self/root/etc/passwd", d.path().join("m")).expect("symlink");
        let root = Root::open(d.path()).expect("open root");
        // inside the root /proc/self does not exist: not found, never the host file
        assert!(root.resolve("/m").is_err());
        let host_root = Root::open("/").expect("open /");
        let e = host_root
            .resolve("/proc/self/root/etc/passwd")
            .expect_err("magic link through /proc/self/root is refused");
        assert!(matches!(e, ResolveError::Io { .. }), "{e}");
    }

    #[test]
    fn create_sets_the_mode_despite_umask_and_never_truncates() {
        let d = tmp();
        let root = Root::open(d.path()).expect("open root");
        assert!(root.create_if_missing("/decoy", 0o604).expect("create"));
        let md = std::fs::metadata(d.path().join("decoy")).expect("stat");
        assert_eq!(md.permissions().mode() & 0o7777, 0o604);
        std::fs::write(d.path().join("decoy"), "keep me").expect("write");
        assert!(!root.create_if_missing("/decoy", 0o600).expect("exists"));
        assert_eq!(
            std::fs::read_to_string(d.path().join("decoy")).expect("read"),
            "keep me"
        );
        assert_eq!(
            std::fs::metadata(d.path().join("decoy"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777,
            0o604,
            "an existing file keeps its mode"
        );
    }

    #[test]
    fn create_never_follows_a_symlink_to_the_host() {
        let d = tmp();
        let host_target = d.path().join("host-file");
        let inner = d.path().join("root");
        std::fs::create_dir(&inner).expect("mkdir");
        symlink(&host_target, inner.join("decoy")).expect("symlink");
        let root = Root::open(&inner).expect("open root");
        // the name exists (as a symlink): nothing is created, nothing followed
        assert!(!root.create_if_missing("/decoy", 0o644).expect("create"));
        assert!(
            !host_target.exists(),
            "the symlink target outside the root was not created"
        );
    }

    #[test]
    fn a_link_is_never_followed_whoever_planted_it() {
        let d = tmp();
        let target = d.path().join("target");
        std::fs::write(&target, "node file").expect("write");
        symlink(&target, d.path().join("decoy")).expect("symlink");
        let root = Root::open(d.path()).expect("open root");
        for (owner, why) in [
            (65534, "a user's link"),
            (0, "root's link in root's directory"),
        ] {
            std::os::unix::fs::lchown(d.path().join("decoy"), Some(owner), Some(owner))
                .expect("lchown");
            let e = root.resolve("/decoy").expect_err(why);
            assert!(matches!(e, ResolveError::Symlink { .. }), "{why}: {e}");
            assert!(e.to_string().contains("/decoy"), "{e}");
        }
    }

    #[test]
    fn directories_are_not_trappable() {
        let d = tmp();
        std::fs::create_dir(d.path().join("dir")).expect("mkdir");
        let root = Root::open(d.path()).expect("open root");
        assert!(matches!(
            root.resolve("/dir"),
            Err(ResolveError::NotAFile { .. })
        ));
        assert!(matches!(
            root.resolve("/nope"),
            Err(ResolveError::NotFound { .. })
        ));
    }
}
