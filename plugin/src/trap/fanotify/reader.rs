//! The thread that answers the permission events: each access to a marked
//! inode is reported (as `struct kive_event` bytes) before the open is
//! allowed or denied.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::record::{capture_flags, encode, file_flags, open_flags, open_mask, MAY_EXEC, MAY_OPEN};
use super::rule;
use super::State;
use crate::node::task::{read_task_u64, task_facts};
use crate::trap::dev::kernel_dev;
use crate::trap::wire::{Action, EventText, Hook, RawEvent, Texts, TrapKey};

pub(super) struct Reader<F> {
    pub(super) state: Arc<State>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) poll: Duration,
    pub(super) on_record: F,
    pub(super) proc_root: PathBuf,
    pub(super) cgroup_root: Option<PathBuf>,
    /// (tid, key) of execs answered, and whether they were denied: the
    /// open that follows is the same access.
    pub(super) execs: HashMap<(u32, TrapKey), bool>,
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
    pub(super) fn run(&mut self) {
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
            text: EventText::new(Texts {
                comm: &facts.comm,
                parent_comm: &facts.parent_comm,
                parent_exe: &facts.parent_exe,
                exe: &facts.exe,
                cwd: &facts.cwd,
                ..Texts::default()
            }),
            loginuid: facts.loginuid,
            process_flags,
            // no flood limit on this tier: nothing is held back
            limited: 0,
            tamper: None,
            // from `stat`, read instead of `comm`: the accessor's per-process
            // cache of v1 cgroups then applies
            start_ns: facts.start_ns,
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
