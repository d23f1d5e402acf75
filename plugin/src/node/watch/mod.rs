//! Change notification for the rescan: which armed entries something may
//! have changed since the last pass.
//!
//! One fanotify group (`FAN_REPORT_FID | FAN_REPORT_DFID_NAME`, a bounded
//! queue) holds an inode mark on every directory of each watched entry's
//! path inside its root (names created, deleted or moved in it; the
//! directory itself moved or deleted) and on the entry's file (attributes
//! and link count, writes, an overlay copy-up through the container's
//! view, the file itself moved or deleted). Mounts, which fanotify does
//! not report on every kernel, are watched through `poll(POLLPRI)` on one
//! `mountinfo` per mount namespace. [`map`] says which entries a
//! notification names; the rescan re-checks only those. An overflowed
//! queue is reported as such (the rescan then looks at everything).
//! Marks and mount watches are bounded; an entry that cannot be watched
//! (the limit, a filesystem without file handles, no process for its
//! mounts) is reported so, and the rescan keeps looking at it every pass.

pub mod event;
pub mod map;
pub mod mounts;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rustix::fs::{Mode, OFlags};

use super::resolve::io_err;
use super::Root;
use map::{handle_hash, WatchMap};

/// Names in a watched directory created, deleted or moved; the directory
/// itself moved or deleted.
const DIR_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;
/// A watched file's attributes or link count changed, it was written (an
/// overlay copies it up on the first write), moved or deleted.
const FILE_MASK: u64 = libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF;
const SELF_CHANGE: u64 = libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF;
/// `AT_HANDLE_FID` (Linux 6.5): the handle need not be decodable.
const AT_HANDLE_FID: libc::c_int = 0x200;
/// Reads per drain (a queue filled faster than that is read next pass).
const READS: usize = 64;

/// Why an entry is not watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No fanotify group (old kernel, no capability).
    #[error("change notification is off: {0}")]
    Off(String),
    /// A bound was reached.
    #[error("the limit of {limit} {what} is reached")]
    Limit {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The path cannot be split into components.
    #[error("path {0:?} is not absolute with plain components")]
    Path(String),
    /// The root has no process to read its mounts through.
    #[error("root {0}: no process to watch its mounts through")]
    NoMounts(String),
    /// A directory on the path could not be opened.
    #[error(transparent)]
    Resolve(#[from] super::ResolveError),
    /// A system call failed.
    #[error("{what} {path:?}: {source}")]
    Io {
        /// The call.
        what: &'static str,
        /// The path it was about.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What a drain found.
#[derive(Debug, Default)]
pub struct Drained {
    /// Entries a notification named (duplicates possible).
    pub ids: Vec<u32>,
    /// Roots (by address) whose mounts changed, with the mount points
    /// that came or went (in the root's view).
    pub roots: Vec<(usize, Vec<String>)>,
    /// The queue overflowed (or could not be read): anything may have
    /// changed.
    pub overflow: bool,
}

struct MountWatch {
    fd: OwnedFd,
    roots: HashSet<usize>,
    /// The table as read last.
    table: mounts::Table,
}

#[derive(Default)]
struct State {
    map: WatchMap,
    /// Objects marked (by handle hash).
    marked: HashSet<u64>,
    /// Directories already marked: (root, path) → handle hash. Cleared at
    /// each notification (a directory may have been swapped).
    dirs: HashMap<(usize, String), u64>,
    /// Mount namespace of each root (`None`: cannot be watched), with the
    /// root (an address reused by another root is told apart).
    root_ns: HashMap<usize, (Weak<Root>, Option<u64>)>,
    mounts: HashMap<u64, MountWatch>,
}

/// The notification group, its marks and mount watches.
pub struct DirWatch {
    group: Result<OwnedFd, String>,
    state: Mutex<State>,
    max_marks: usize,
    max_mounts: usize,
    events: AtomicU64,
    overflows: AtomicU64,
}

fn errno<'a>(what: &'static str, path: &'a str) -> impl FnOnce(io::Error) -> WatchError + 'a {
    move |source| WatchError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

fn init() -> Result<OwnedFd, String> {
    let base = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_REPORT_FID
        | libc::FAN_REPORT_DFID_NAME;
    let flags = libc::O_RDONLY as libc::c_uint;
    // SAFETY: plain flags; the fd returned is owned below.
    let mut fd = unsafe { libc::fanotify_init(base | libc::FAN_UNLIMITED_MARKS, flags) };
    if fd < 0 {
        // without CAP_SYS_ADMIN: the per-user mark limit applies
        // SAFETY: as above.
        fd = unsafe { libc::fanotify_init(base, flags) };
    }
    if fd < 0 {
        return Err(format!(
            "fanotify_init with file handles (Linux 5.9+): {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: fanotify_init returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The components of an absolute path (none empty, `.` or `..`).
fn components(path: &str) -> Option<Vec<&str>> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let plain = comps.iter().all(|c| *c != "." && *c != "..");
    (path.starts_with('/') && plain && !comps.is_empty()).then_some(comps)
}

/// Filesystem id and file handle of `fd` (`AT_EMPTY_PATH`), hashed.
fn handle_of(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let sfs = rustix::fs::fstatfs(fd).map_err(io_err)?;
    // SAFETY: fsid_t is two C ints (8 bytes, no padding) on Linux.
    let fsid: [u8; 8] = unsafe { std::mem::transmute(sfs.f_fsid) };
    const MAX: usize = 128; // MAX_HANDLE_SZ
    #[repr(C)]
    struct Handle {
        bytes: libc::c_uint,
        kind: libc::c_int,
        f: [u8; MAX],
    }
    let mut h = Handle {
        bytes: MAX as libc::c_uint,
        kind: 0,
        f: [0; MAX],
    };
    let mut mount_id: libc::c_int = 0;
    // the handle fanotify reports (a filesystem that cannot decode handles,
    // e.g. overlayfs, still encodes one: Linux 6.5+), else a decodable one
    let mut err = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in [AT_HANDLE_FID | libc::AT_EMPTY_PATH, libc::AT_EMPTY_PATH] {
        h.bytes = MAX as libc::c_uint;
        // SAFETY: `h` is a file_handle with room for MAX_HANDLE_SZ bytes,
        // the path is a NUL-terminated empty string, both outlive the call.
        let rc = unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                (&raw mut h).cast(),
                &mut mount_id,
                flags,
            )
        };
        if rc == 0 {
            let f = h.f.get(..h.bytes as usize).unwrap_or(&h.f);
            return Ok(handle_hash(fsid, h.kind, f));
        }
        err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    Err(err)
}

impl DirWatch {
    /// A group with at most `max_marks` marks and `max_mounts` mount
    /// namespaces watched; off (every entry unwatched) when the kernel
    /// refuses it.
    pub fn new(max_marks: usize, max_mounts: usize) -> Self {
        let group = init();
        if let Err(e) = &group {
            tracing::warn!("{e}: the rescan looks at every armed entry each pass");
        }
        Self {
            group,
            state: Mutex::default(),
            max_marks,
            max_mounts,
            events: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether notification is on.
    pub fn on(&self) -> bool {
        self.group.is_ok()
    }

    /// Watches entry `id` at `path` inside `root` (known as `root_key`):
    /// every directory of the path, the file the path leads to now, and
    /// the root's mounts. `fresh`: directories opened again even when
    /// marked before (the entry was named by a notification).
    pub fn watch(
        &self,
        root: &Arc<Root>,
        path: &str,
        id: u32,
        fresh: bool,
    ) -> Result<(), WatchError> {
        let group = self
            .group
            .as_ref()
            .map_err(|e| WatchError::Off(e.clone()))?;
        let comps = components(path).ok_or_else(|| WatchError::Path(path.to_string()))?;
        let root_key = Arc::as_ptr(root) as usize;
        self.watch_mounts(root, root_key)?;
        let mut dir = String::from("/");
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let cached = (!fresh && !last)
                .then(|| self.state().dirs.get(&(root_key, dir.clone())).copied())
                .flatten();
            let h = match cached {
                Some(h) => h,
                None => {
                    let fd = root.open_dir(&dir)?;
                    let h = self.mark(group, fd.as_fd(), None, &dir)?;
                    self.state().dirs.insert((root_key, dir.clone()), h);
                    if last {
                        let f = self.mark(group, fd.as_fd(), Some(comp), path)?;
                        self.state().map.add_file(f, id);
                    }
                    h
                }
            };
            self.state().map.add_child(h, comp.as_bytes(), id);
            if !dir.ends_with('/') {
                dir.push('/');
            }
            dir.push_str(comp);
        }
        Ok(())
    }

    /// Marks directory `dir` itself (`name` none) or `name` in it (not
    /// followed): the object's handle hash.
    fn mark(
        &self,
        group: &OwnedFd,
        dir: BorrowedFd<'_>,
        name: Option<&str>,
        path: &str,
    ) -> Result<u64, WatchError> {
        let (obj, mask, cname) = match name {
            Some(n) => {
                let fd = rustix::fs::openat(
                    dir,
                    n,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| errno("opening", path)(io_err(e)))?;
                let c = CString::new(n).map_err(|_| WatchError::Path(path.to_string()))?;
                (handle_of(fd.as_fd()), FILE_MASK, Some(c))
            }
            None => (handle_of(dir), DIR_MASK, None),
        };
        let h = obj.map_err(errno("file handle of", path))?;
        if self.state().marked.contains(&h) {
            return Ok(h);
        }
        if self.state().marked.len() >= self.max_marks {
            return Err(WatchError::Limit {
                what: "notification marks",
                limit: self.max_marks,
            });
        }
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW;
        let p = cname.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: the group and `dir` are open fds; `p` is null (the
        // directory itself) or a NUL-terminated name that outlives the call.
        let rc = unsafe { libc::fanotify_mark(group.as_raw_fd(), flags, mask, dir.as_raw_fd(), p) };
        if rc != 0 {
            return Err(errno("marking", path)(io::Error::last_os_error()));
        }
        self.state().marked.insert(h);
        Ok(h)
    }

    fn watch_mounts(&self, root: &Arc<Root>, key: usize) -> Result<(), WatchError> {
        let no_mounts = || WatchError::NoMounts(root.path().display().to_string());
        {
            let mut st = self.state();
            match st.root_ns.get(&key) {
                Some((w, ns)) if w.upgrade().is_some_and(|r| Arc::ptr_eq(&r, root)) => {
                    return ns.map(|_| ()).ok_or_else(no_mounts);
                }
                Some(_) => {
                    // another root at a freed root's address
                    st.dirs.retain(|(k, _), _| *k != key);
                }
                None => {}
            }
        }
        let opened = root.proc_dir.as_ref().map(|p| p.open());
        let Some(Ok(proc_dir)) = opened else {
            self.state()
                .root_ns
                .insert(key, (Arc::downgrade(root), None));
            return Err(no_mounts());
        };
        let ns = rustix::fs::statat(&proc_dir, "ns/mnt", rustix::fs::AtFlags::empty())
            .map_err(|e| errno("reading the mount namespace of", "")(io_err(e)))?
            .st_ino;
        let mut st = self.state();
        if let Some(w) = st.mounts.get_mut(&ns) {
            w.roots.insert(key);
        } else {
            if st.mounts.len() >= self.max_mounts {
                return Err(WatchError::Limit {
                    what: "mount namespaces watched",
                    limit: self.max_mounts,
                });
            }
            let fd = rustix::fs::openat(
                &proc_dir,
                "mountinfo",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno("opening", "mountinfo")(io_err(e)))?;
            // read after the open: a change since is polled
            let table = mounts::table(&read_all(&fd).map_err(errno("reading", "mountinfo"))?);
            st.mounts.insert(
                ns,
                MountWatch {
                    fd,
                    roots: HashSet::from([key]),
                    table,
                },
            );
        }
        st.root_ns.insert(key, (Arc::downgrade(root), Some(ns)));
        Ok(())
    }

    /// What changed since the previous drain (never blocks).
    pub fn drain(&self) -> Drained {
        let mut out = Drained::default();
        let Ok(group) = &self.group else {
            return out;
        };
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..READS {
            // SAFETY: `buf` is writable for its length; the group is open.
            let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    out.overflow = true;
                }
                break;
            };
            if n == 0 {
                break;
            }
            let (events, bad) = event::parse(buf.get(..n).unwrap_or_default());
            out.overflow |= bad;
            let st = self.state();
            for ev in &events {
                if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                    out.overflow = true;
                }
                st.map
                    .named(&ev.records, ev.mask & SELF_CHANGE != 0, &mut out.ids);
            }
            self.events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        let mut st = self.state();
        if out.overflow {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
        if out.overflow || !out.ids.is_empty() {
            // a directory may have been swapped: opened again next time
            st.dirs.clear();
        }
        out.roots = mounts_changed(&mut st.mounts);
        out
    }

    /// Forgets entries that are gone and roots no entry uses; when more
    /// marks are stale than needed, removes them all and returns `true`
    /// (every entry must be watched again).
    pub fn compact(&self, live: impl Fn(u32) -> bool, live_roots: &HashSet<usize>) -> bool {
        let Ok(group) = &self.group else {
            return false;
        };
        let mut st = self.state();
        st.root_ns.retain(|k, _| live_roots.contains(k));
        for w in st.mounts.values_mut() {
            w.roots.retain(|k| live_roots.contains(k));
        }
        st.mounts.retain(|_, w| !w.roots.is_empty());
        let needed = st.map.retain(live);
        let stale = st.marked.len().saturating_sub(needed);
        if stale <= needed.max(1024) {
            return false;
        }
        // SAFETY: the group is open; FLUSH takes no path.
        unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            );
        }
        st.map.clear();
        st.marked.clear();
        st.dirs.clear();
        tracing::info!("{stale} stale notification marks removed");
        true
    }

    /// Marks placed.
    pub fn marks(&self) -> usize {
        self.state().marked.len()
    }

    /// `mountinfo` files held open (one per mount namespace watched).
    pub fn mount_watches(&self) -> usize {
        self.state().mounts.len()
    }

    /// Notifications read.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Queue overflows (each followed by a full pass).
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

/// The whole of a `mountinfo` file, from its start.
fn read_all(fd: &OwnedFd) -> io::Result<String> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::from(fd.try_clone()?);
    f.seek(io::SeekFrom::Start(0))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

/// The roots of every mount namespace whose mount table changed since it
/// was last polled, with the mount points that came or went (all of the
/// root, `/`, when the table cannot be read).
fn mounts_changed(mounts: &mut HashMap<u64, MountWatch>) -> Vec<(usize, Vec<String>)> {
    let mut watches: Vec<&mut MountWatch> = mounts.values_mut().collect();
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        return Vec::new();
    }
    // SAFETY: `fds` is a valid array of its length; timeout 0 never blocks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (p, w) in fds.iter().zip(watches.iter_mut()) {
        if p.revents & (libc::POLLPRI | libc::POLLERR) == 0 {
            continue;
        }
        let points = match read_all(&w.fd) {
            Ok(text) => {
                let table = mounts::table(&text);
                let points = mounts::changed(&w.table, &table);
                w.table = table;
                points
            }
            Err(_) => vec!["/".to_string()],
        };
        if !points.is_empty() {
            out.extend(w.roots.iter().map(|r| (*r, points.clone())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_plain_paths_are_split() {
        assert_eq!(components("/etc/app/key"), Some(vec!["etc", "app", "key"]));
        assert_eq!(components("/etc//key/"), Some(vec!["etc", "key"]));
        assert_eq!(components("etc/key"), None);
        assert_eq!(components("/etc/../key"), None);
        assert_eq!(components("/"), None);
    }
}
