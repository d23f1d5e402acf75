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

mod error;
#[cfg(test)]
mod tests;

pub(crate) use error::io_err;
pub use error::ResolveError;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::links::name_of;
pub use super::links::{new_path_of, Links};
use super::{atomic_writer, mounts};
use crate::trap::dev::kernel_dev;
use crate::trap::TrapKey;

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
    /// The mount it was found on (`statx`'s `stx_mnt_id`, read with its
    /// key), [`NO_MNT_ID`] on a kernel without it: a plain `u64` (an
    /// `Option` took 16 bytes in each of a node's 100,000 entries); read
    /// through [`PinnedFile::mnt_id`].
    mnt_id: u64,
}

/// [`PinnedFile`]'s mount id when `statx` did not give one: never a mount
/// id (`STATX_MNT_ID` ids are `int`s), and if it were, the fallback reads
/// the same id again.
const NO_MNT_ID: u64 = u64::MAX;

impl PinnedFile {
    /// The mount it was found on, if `statx` gave it with its key.
    pub(super) fn mnt_id(&self) -> Option<u64> {
        (self.mnt_id != NO_MNT_ID).then_some(self.mnt_id)
    }

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

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// What [`Root::resolve`] needs of a file, from one `statx` (type, key,
/// links and mount id at once); `fstat` where `statx` is refused.
struct FileStat {
    file_type: rustix::fs::FileType,
    st_dev: u64,
    ino: u64,
    nlink: u64,
    mnt_id: Option<u64>,
}

fn file_stat(fd: &OwnedFd) -> rustix::io::Result<FileStat> {
    use rustix::fs::{AtFlags, FileType, StatxFlags};
    match rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    ) {
        Ok(st)
            if st.stx_mask & StatxFlags::BASIC_STATS.bits() == StatxFlags::BASIC_STATS.bits() =>
        {
            Ok(FileStat {
                file_type: FileType::from_raw_mode(st.stx_mode.into()),
                st_dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
                ino: st.stx_ino,
                nlink: st.stx_nlink.into(),
                mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
            })
        }
        // a filesystem without every basic field, or no statx: fstat
        Ok(_) | Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            let st = rustix::fs::fstat(fd)?;
            Ok(FileStat {
                file_type: FileType::from_raw_mode(st.st_mode),
                st_dev: st.st_dev,
                ino: st.st_ino,
                nlink: st.st_nlink,
                mnt_id: None,
            })
        }
        Err(e) => Err(e),
    }
}

impl PinnedFile {
    /// The pin of the regular file open at `fd`, as `st` saw it.
    fn of(fd: OwnedFd, st: &FileStat) -> Self {
        let seen = Links {
            nlink: st.nlink,
            name: name_of(&fd),
        };
        PinnedFile {
            pin: std::sync::Arc::new(fd),
            key: TrapKey {
                dev: kernel_dev(st.st_dev),
                ino: st.ino,
            },
            st_dev: st.st_dev,
            seen,
            mnt_id: st.mnt_id.unwrap_or(NO_MNT_ID),
        }
    }
}

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

    /// [`Root::with_proc_dir`] with the node's init
    /// ([`super::host::node_init`]), for the node's root mounted elsewhere
    /// (`/host` in a DaemonSet): the node's init sees the node's mounts from
    /// that root; unchanged if it cannot be opened.
    pub fn with_init_mounts(self, proc_root: &Path) -> Self {
        match super::host::node_init(proc_root) {
            Some(dir) => self.with_proc_dir(dir),
            None => self,
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
        let mut st = file_stat(&fd).map_err(|e| self.err("stat of", path, e))?;
        if st.file_type == rustix::fs::FileType::Symlink {
            fd = self.atomic_writer_file(path)?;
            st = file_stat(&fd).map_err(|e| self.err("stat of", path, e))?;
        }
        if st.file_type != rustix::fs::FileType::RegularFile {
            return Err(ResolveError::NotAFile {
                path: path.to_string(),
                root: self.path.clone(),
            });
        }
        Ok(PinnedFile::of(fd, &st))
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
