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

use super::dev::kernel_dev;
use super::engine::KernelStats;
use super::wire::{Action, Hook, RawEvent, TrapKey, TrapValue};
use super::TrapError;
use crate::node::cgroup::CgroupIndex;
use crate::node::task::{read_task_u64, task_facts};
use record::{capture_flags, encode, file_flags, open_flags, open_mask, MAY_EXEC, MAY_OPEN};

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
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sources(&self) -> MutexGuard<'_, HashSet<(u32, TrapKey)>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
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

struct Reader<F> {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    poll: Duration,
    on_record: F,
    proc_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    /// (tid, key) of execs answered, and whether they were denied: the
    /// open that follows is the same access.
    execs: HashMap<(u32, TrapKey), bool>,
}

/// `struct fanotify_event_metadata` fields kive reads.
struct Meta {
    len: usize,
    mask: u64,
    fd: i32,
    pid: i32,
}

fn meta_at(buf: &[u8], at: usize) -> Option<Meta> {
    let b = buf.get(at..at + std::mem::size_of::<libc::fanotify_event_metadata>())?;
    let u32_at = |o: usize| Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?));
    if b[4] != libc::FANOTIFY_METADATA_VERSION {
        return None;
    }
    Some(Meta {
        len: u32_at(0)? as usize,
        mask: u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?),
        fd: u32_at(16)? as i32,
        pid: u32_at(20)? as i32,
    })
}

impl<F: FnMut(&[u8])> Reader<F> {
    fn run(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        let state = Arc::clone(&self.state);
        let group = state.group.as_fd();
        let timeout = libc::c_int::try_from(self.poll.as_millis()).unwrap_or(100);
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            let mut pfd = libc::pollfd {
                fd: group.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, if stopping { 0 } else { timeout }) };
            let n = match rustix::io::read(group, &mut buf) {
                Ok(n) => n,
                Err(_) if stopping => return,
                Err(_) => continue,
            };
            let mut at = 0;
            while let Some(meta) = meta_at(&buf[..n], at) {
                if meta.len == 0 {
                    break;
                }
                at += meta.len;
                self.handle(&meta);
            }
        }
    }

    fn handle(&mut self, meta: &Meta) {
        if meta.fd == libc::FAN_NOFD {
            if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.state.counters.drops.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        // SAFETY: the kernel installed this fd for us in the event; it is
        // owned (and closed) here.
        let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
        let deny = self.decide(meta, file.as_fd());
        let response = libc::fanotify_response {
            fd: meta.fd,
            response: if deny {
                libc::FAN_DENY
            } else {
                libc::FAN_ALLOW
            },
        };
        // SAFETY: fanotify_response is plain data, read as bytes for write(2).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&response as *const libc::fanotify_response).cast::<u8>(),
                std::mem::size_of::<libc::fanotify_response>(),
            )
        };
        if let Err(e) = rustix::io::write(&self.state.group, bytes) {
            tracing::error!("fanotify tier: answering an open: {e}");
        }
        drop(file);
    }

    /// Reports the access (if it is one to report); returns whether to deny.
    fn decide(&mut self, meta: &Meta, file: BorrowedFd<'_>) -> bool {
        // the access: the event was just read, the process waits since
        let ts_boot_ns = boot_ns();
        let Ok(st) = rustix::fs::fstat(file) else {
            return false;
        };
        let key = TrapKey {
            dev: kernel_dev(st.st_dev),
            ino: st.st_ino,
        };
        let Some(value) = self.state.marks().get(&key).map(|m| m.value) else {
            return false;
        };
        let tid = u32::try_from(meta.pid).unwrap_or(0);
        // kive's own accesses (any thread of this process) never fire
        if self
            .proc_root
            .join("self/task")
            .join(tid.to_string())
            .exists()
        {
            return false;
        }
        let exec = meta.mask & libc::FAN_OPEN_EXEC_PERM != 0;
        if !exec {
            if let Some(deny) = self.execs.remove(&(tid, key)) {
                // the open half of an exec already decided (and reported)
                return deny;
            }
        }
        let facts = task_facts(&self.proc_root, tid);
        let (mask, flags, mode_known) = if exec {
            (MAY_OPEN | MAY_EXEC, 0, true)
        } else {
            let how = |addr| read_task_u64(&self.proc_root, tid, addr);
            match open_flags(facts.syscall, how) {
                Some(f) => (open_mask(f), file_flags(f), true),
                // an open kive cannot attribute to a syscall (io_uring, a
                // kernel-internal open): access unknown
                None => (MAY_OPEN, 0, false),
            }
        };
        let state = &self.state;
        let is_listed = |id: u32, exe: TrapKey| state.sources().contains(&(id, exe));
        let mut opener = rule::Opener {
            proc_root: &self.proc_root,
            tid,
            trap_id: value.trap_id,
            file_uid: st.st_uid,
            is_listed: &is_listed,
        };
        let passes = rule::rule_passes(value.conditions, mask, mode_known, &mut opener);
        if exec {
            if self.execs.len() > 4096 {
                self.execs.clear();
            }
            self.execs.insert((tid, key), !passes && value.block);
        }
        if passes {
            // the access satisfies the rule: silent, as in the kernel
            return false;
        }
        let cgroup_id = match (&self.cgroup_root, &facts.cgroup) {
            (Some(root), Some(rel)) => {
                let rel = rel.strip_prefix("/").unwrap_or(rel);
                std::fs::metadata(root.join(rel))
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap_or(0)
            }
            _ => 0,
        };
        let process_flags =
            capture_flags(&facts.exe, &facts.cwd, &facts.parent_exe, &facts.cmdline);
        let ev = RawEvent {
            ts_boot_ns,
            key,
            cgroup_id,
            pid: tid,
            tgid: facts.tgid,
            ppid: facts.ppid,
            ns_pid: facts.ns_pid,
            uid: facts.uid,
            gid: facts.gid,
            mask,
            flags,
            mnt_ns: facts.mnt_ns,
            trap_id: value.trap_id,
            hook: Hook::FanotifyPerm,
            action: if value.block {
                Action::Block
            } else {
                Action::Audit
            },
            comm: facts.comm,
            parent_comm: facts.parent_comm,
            parent_exe: facts.parent_exe,
            loginuid: facts.loginuid,
            exe: facts.exe,
            cwd: facts.cwd,
            args: Vec::new(),
            process_flags,
            // no flood limit on this tier: nothing is held back
            limited: 0,
            tamper: None,
        };
        (self.on_record)(&encode(&ev, &facts.cmdline));
        let c = &self.state.counters;
        c.hits.fetch_add(1, Ordering::Relaxed);
        if value.block {
            c.blocked.fetch_add(1, Ordering::Relaxed);
        }
        value.block
    }
}

fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}
