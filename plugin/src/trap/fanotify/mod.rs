//! The fanotify tier: an inode mark with `FAN_OPEN_PERM |
//! FAN_OPEN_EXEC_PERM` on each armed file. Nothing runs for an unmarked
//! inode; an open of a marked one waits in the kernel until the reader
//! thread answers, so the process's `/proc` details are read while it still
//! exists, a flood slows the flooder instead of losing events, and
//! `FAN_DENY` blocks the open (EPERM). Rule conditions (readOnly,
//! ownerOnly, fromSource, exec only) are decided in user space while the
//! opener waits ([`rule`]).
//!
//! Marks are in the kernel only while a reader answers them: arming before
//! [`FanotifyEngine::start_reader`] records the key, and stopping the reader
//! flushes every mark first (an open never waits on a kive that is not
//! listening). Closing the group (drop) allows every waiting open.

mod reader;
pub mod record;
pub mod rule;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::engine::KernelStats;
use super::wire::{TrapKey, TrapValue};
use super::TrapError;
use crate::node::cgroup::CgroupIndex;
use crate::sync::lock;
use reader::Reader;

/// The events each mark asks for.
const MASK: u64 = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;

struct Mark {
    value: TrapValue,
    /// An `O_PATH` fd of the file: marks are added and removed by path.
    pin: OwnedFd,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    drops: AtomicU64,
    blocked: AtomicU64,
}

struct State {
    group: OwnedFd,
    marks: Mutex<HashMap<TrapKey, Mark>>,
    /// (trap id, executable key) of the traps' `fromSource` executables.
    sources: Mutex<HashSet<(u32, TrapKey)>>,
    /// Whether marks are in the kernel (a reader runs).
    live: AtomicBool,
    counters: Counters,
}

/// A fanotify group with one inode mark per armed key.
pub struct FanotifyEngine {
    state: Arc<State>,
    reader: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

fn fail(what: impl Into<String>) -> impl FnOnce(io::Error) -> TrapError {
    let what = what.into();
    move |source| TrapError::Fanotify { what, source }
}

fn mark_path(pin: BorrowedFd<'_>) -> std::ffi::CString {
    // an O_PATH fd cannot be marked directly (fanotify_mark takes a path or
    // a regular fd); its /proc/self/fd link resolves to the same inode
    std::ffi::CString::new(format!("/proc/self/fd/{}", pin.as_raw_fd()))
        .unwrap_or_else(|_| c"/".to_owned())
}

impl State {
    fn marks(&self) -> MutexGuard<'_, HashMap<TrapKey, Mark>> {
        lock(&self.marks)
    }

    fn sources(&self) -> MutexGuard<'_, HashSet<(u32, TrapKey)>> {
        lock(&self.sources)
    }

    fn mark(&self, op: libc::c_uint, pin: BorrowedFd<'_>) -> io::Result<()> {
        let path = mark_path(pin);
        // SAFETY: the group fd is open for the engine's life and `path` is
        // a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                op | libc::FAN_MARK_INODE,
                MASK,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn flush(&self) {
        // SAFETY: the group fd is open; FLUSH takes no path.
        unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_FLUSH | libc::FAN_MARK_INODE,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            );
        }
    }
}

impl FanotifyEngine {
    /// Creates the fanotify group (needs `CAP_SYS_ADMIN`).
    pub fn load() -> Result<Self, TrapError> {
        let flags = libc::FAN_CLASS_CONTENT
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_UNLIMITED_MARKS
            | libc::FAN_REPORT_TID;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain syscall with constant arguments.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(
                fail("fanotify_init (permission events need CAP_SYS_ADMIN)")(
                    io::Error::last_os_error(),
                ),
            );
        }
        // SAFETY: fanotify_init returned a new fd that nothing else owns.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            state: Arc::new(State {
                group,
                marks: Mutex::new(HashMap::new()),
                sources: Mutex::new(HashSet::new()),
                live: AtomicBool::new(false),
                counters: Counters::default(),
            }),
            reader: None,
        })
    }

    /// Arms `key` (the key of `file`); re-arming a key updates its value.
    pub fn arm(
        &self,
        file: BorrowedFd<'_>,
        key: TrapKey,
        value: TrapValue,
    ) -> Result<(), TrapError> {
        let mut marks = self.state.marks();
        if let Some(m) = marks.get_mut(&key) {
            m.value = value;
            return Ok(());
        }
        let pin = rustix::io::fcntl_dupfd_cloexec(file, 3)
            .map_err(|e| fail("duplicating the pinned file")(e.into()))?;
        if self.state.live.load(Ordering::SeqCst) {
            self.state
                .mark(libc::FAN_MARK_ADD, pin.as_fd())
                .map_err(|source| TrapError::Fanotify {
                    what: format!(
                        "marking trap key {}:{}",
                        super::dev::kernel_dev_display(key.dev),
                        key.ino
                    ),
                    source,
                })?;
        }
        marks.insert(key, Mark { value, pin });
        Ok(())
    }

    /// Removes a key's mark; a key that is not armed is not an error.
    pub fn disarm(&self, key: TrapKey) -> Result<(), TrapError> {
        let Some(mark) = self.state.marks().remove(&key) else {
            return Ok(());
        };
        if self.state.live.load(Ordering::SeqCst) {
            match self.state.mark(libc::FAN_MARK_REMOVE, mark.pin.as_fd()) {
                Ok(()) => {}
                // the mark went with its inode
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(TrapError::Fanotify {
                        what: format!(
                            "removing the mark of trap key {}:{}",
                            super::dev::kernel_dev_display(key.dev),
                            key.ino
                        ),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Lists (or unlists) executable `exe` as a source of trap `trap_id`
    /// (rules with `fromSource`), matched against the opener's
    /// `/proc/<tid>/exe` inode.
    pub fn set_source(&self, trap_id: u32, exe: TrapKey, listed: bool) {
        let mut sources = self.state.sources();
        if listed {
            sources.insert((trap_id, exe));
        } else {
            sources.remove(&(trap_id, exe));
        }
    }

    /// The armed keys.
    pub fn armed_keys(&self) -> Vec<TrapKey> {
        self.state.marks().keys().copied().collect()
    }

    /// Hits (reported accesses), drops (queue overflows: none with an
    /// unlimited queue) and blocked opens.
    pub fn stats(&self) -> KernelStats {
        let c = &self.state.counters;
        KernelStats {
            hits: c.hits.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            // no flood limit: a flooder waits for each answer instead
            limited: 0,
        }
    }

    /// Puts every mark in the kernel and starts the thread that answers
    /// them; each access is handed to `on_record` as `struct kive_event`
    /// bytes before the open is answered.
    pub fn start_reader<F>(&mut self, poll: Duration, on_record: F) -> Result<(), TrapError>
    where
        F: FnMut(&[u8]) + Send + 'static,
    {
        if self.reader.is_some() {
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = Reader {
            state: Arc::clone(&self.state),
            stop: Arc::clone(&stop),
            poll,
            on_record,
            proc_root: PathBuf::from("/proc"),
            cgroup_root: CgroupIndex::for_this_node().root().map(Path::to_path_buf),
            execs: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("kive-fanotify".into())
            .spawn(move || reader.run())
            .map_err(TrapError::Thread)?;
        self.reader = Some((stop, handle));
        // marks only once something answers them
        let marks = self.state.marks();
        self.state.live.store(true, Ordering::SeqCst);
        for (key, m) in marks.iter() {
            if let Err(e) = self.state.mark(libc::FAN_MARK_ADD, m.pin.as_fd()) {
                tracing::error!(
                    "fanotify tier: marking trap key {}:{}: {e}",
                    super::dev::kernel_dev_display(key.dev),
                    key.ino
                );
            }
        }
        Ok(())
    }

    /// Flushes every mark, then stops the reader once it has answered what
    /// is queued (at most one poll period).
    pub fn stop_reader(&mut self) {
        if let Some((stop, handle)) = self.reader.take() {
            {
                let _marks = self.state.marks();
                self.state.live.store(false, Ordering::SeqCst);
                self.state.flush();
            }
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
    }
}

impl Drop for FanotifyEngine {
    fn drop(&mut self) {
        self.stop_reader();
    }
}
