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
mod sys;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rustix::fs::{FileType, Mode, OFlags};

use super::resolve::io_err;
use super::Root;
use crate::sync::lock;
use map::WatchMap;
use sys::{components, errno, handle_of, init, mounts_changed, open_dir, read_all};

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
    /// The path goes through a symlink, or leads to one (the
    /// atomic-writer layout): a change to what the link points into is
    /// not a change of a name on the path.
    #[error("path {0:?} goes through a symlink")]
    Symlink(String),
    /// The root has no process to read its mounts through.
    #[error("root {0}: no process to watch its mounts through")]
    NoMounts(String),
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
    /// Time spent in [`DirWatch::watch`] (placing marks), in µs.
    watch_us: AtomicU64,
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
            watch_us: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
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
        let t = std::time::Instant::now();
        let result = self.watch_path(root, path, id, fresh);
        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.watch_us.fetch_add(us, Ordering::Relaxed);
        result
    }

    fn watch_path(
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
                    let fd = open_dir(root, &dir)?;
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
                let st = rustix::fs::fstat(&fd).map_err(|e| errno("stat of", path)(io_err(e)))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(WatchError::Symlink(path.to_string()));
                }
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
        sys::mark(group.as_fd(), mask, dir, cname.as_deref()).map_err(errno("marking", path))?;
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
            let n = match sys::read_events(group.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        out.overflow = true;
                    }
                    break;
                }
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
        sys::flush_marks(group.as_fd());
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

    /// Time spent placing marks, in µs.
    pub fn watch_us(&self) -> u64 {
        self.watch_us.load(Ordering::Relaxed)
    }

    /// Queue overflows (each followed by a full pass).
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}
