//! What `/proc` says about one task, for the fanotify tier: the task waits
//! in `open` (or `execve`) until kive answers its permission event, so
//! everything read here is still the accessing process's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procfs::process_identity;

/// The facts the eBPF tiers capture in the kernel, read from `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFacts {
    /// Process id (`Tgid:`).
    pub tgid: u32,
    /// Parent process id (`PPid:`).
    pub ppid: u32,
    /// Id in the task's own pid namespace (last `NSpid:` value).
    pub ns_pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// The thread's `comm`.
    pub comm: String,
    /// When the process (thread group) started, ns since boot to the clock
    /// tick (0 = unknown).
    pub start_ns: u64,
    /// `loginuid`, `None` when unset.
    pub loginuid: Option<u32>,
    /// The cgroup v2 path (`0::<path>`).
    pub cgroup: Option<PathBuf>,
    /// Mount namespace inode.
    pub mnt_ns: u32,
    /// `exe` link.
    pub exe: String,
    /// `cwd` link.
    pub cwd: String,
    /// `cmdline`, NUL-separated.
    pub cmdline: Vec<u8>,
    /// The parent's `comm`.
    pub parent_comm: String,
    /// The parent's `exe` link.
    pub parent_exe: String,
    /// The syscall the thread is in: number and six arguments.
    pub syscall: Option<(u64, [u64; 6])>,
}

/// Reads the facts of thread `tid` under `proc_root` (normally `/proc`).
/// What cannot be read stays empty.
pub fn task_facts(proc_root: &Path, tid: u32) -> TaskFacts {
    let dir = proc_root.join(tid.to_string());
    let text = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let link = |d: &Path, name: &str| {
        std::fs::read_link(d.join(name))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // `stat` holds the comm unescaped, as the `comm` file does, and the
    // start time: one read for both
    let thread = process_identity(proc_root, tid);
    let status = parse_status(&text("status"));
    let start_ns = if status.tgid == tid {
        thread.as_ref().map(|t| t.start_boot_ns)
    } else {
        // a thread's own start is not its process's: the leader's
        process_identity(proc_root, status.tgid).map(|t| t.start_boot_ns)
    };
    let parent = proc_root.join(status.ppid.to_string());
    let mnt_ns = ns_inode(&link(&dir, "ns/mnt"));
    TaskFacts {
        tgid: status.tgid,
        ppid: status.ppid,
        ns_pid: status.ns_pid,
        uid: status.uid,
        gid: status.gid,
        comm: thread.map(|t| t.comm).unwrap_or_default(),
        start_ns: start_ns.unwrap_or(0),
        loginuid: text("loginuid")
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&u| u != u32::MAX),
        cgroup: cgroup_v2_path(&text("cgroup")),
        mnt_ns,
        exe: link(&dir, "exe"),
        cwd: link(&dir, "cwd"),
        cmdline: std::fs::read(dir.join("cmdline")).unwrap_or_default(),
        parent_comm: if status.ppid == 0 {
            String::new()
        } else {
            std::fs::read_to_string(parent.join("comm"))
                .map(|c| c.trim_end_matches('\n').to_string())
                .unwrap_or_default()
        },
        parent_exe: if status.ppid == 0 {
            String::new()
        } else {
            link(&parent, "exe")
        },
        syscall: parse_syscall(&blocked_syscall_text(|| text("syscall"), SYSCALL_PATIENCE)),
    }
}

/// How long [`blocked_syscall_text`] waits for a task to block.
const SYSCALL_PATIENCE: Duration = Duration::from_millis(200);

/// `/proc/<tid>/syscall` once the task is blocked. The kernel queues a
/// permission event and wakes the reader *before* the opener goes to sleep
/// waiting for the answer; until it sleeps, the file says `running` (the
/// kernel reads a task's registers only while it is off the CPU). A reader
/// that gets there first (an emulated or busy machine: Debian 6.1 under
/// qemu did, one event in a hundred) would lose the open's flags, so it
/// reads again, backing off, for up to `patience`: the opener cannot get
/// past the open before kive answers, it can only still be on its way to
/// the wait.
fn blocked_syscall_text(mut read: impl FnMut() -> String, patience: Duration) -> String {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let text = read();
        if !text.starts_with("running") || start.elapsed() >= patience {
            return text;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Reads 8 bytes of a task's memory (`/proc/<tid>/mem`), e.g. the flags of
/// an `openat2` `struct open_how`.
pub fn read_task_u64(proc_root: &Path, tid: u32, addr: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(proc_root.join(tid.to_string()).join("mem")).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_le_bytes(b))
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    tgid: u32,
    ppid: u32,
    ns_pid: u32,
    uid: u32,
    gid: u32,
}

fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut nums = rest.split_whitespace().map(|v| v.parse::<u32>().ok());
        match name {
            "Tgid" => s.tgid = nums.next().flatten().unwrap_or(0),
            "PPid" => s.ppid = nums.next().flatten().unwrap_or(0),
            "Uid" => s.uid = nums.next().flatten().unwrap_or(0),
            "Gid" => s.gid = nums.next().flatten().unwrap_or(0),
            "NSpid" => s.ns_pid = nums.next_back().flatten().unwrap_or(0),
            _ => {}
        }
    }
    s
}

/// `mnt:[4026531841]` → 4026531841 (as the kernel's 32-bit inode field).
fn ns_inode(link: &str) -> u32 {
    link.split_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n as u32)
        .unwrap_or(0)
}

fn cgroup_v2_path(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(PathBuf::from)
}

/// `/proc/<tid>/syscall`: `nr a0 a1 a2 a3 a4 a5 sp pc` (hex arguments);
/// `running` or a blocked-outside-a-syscall `-1 ...` give `None`.
fn parse_syscall(text: &str) -> Option<(u64, [u64; 6])> {
    let mut it = text.split_whitespace();
    let nr = it.next()?.parse::<u64>().ok()?;
    let mut args = [0u64; 6];
    for a in &mut args {
        let v = it.next()?;
        *a = u64::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()?;
    }
    Some((nr, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = parse_status(
            "Name:\tcat\nTgid:\t42\nPid:\t43\nPPid:\t7\nUid:\t1000\t0\t0\t0\nGid:\t100\t0\t0\t0\nNSpid:\t43\t5\n",
        );
        assert_eq!(
            s,
            Status {
                tgid: 42,
                ppid: 7,
                ns_pid: 5,
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(parse_status("garbage\nUid: x\n"), Status::default());
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(
            parse_syscall("257 0xffffff9c 0x7ffd 0x241 0x1b6 0x0 0x0 0x7ffc 0x7f00\n"),
            Some((257, [0xffff_ff9c, 0x7ffd, 0x241, 0x1b6, 0, 0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc 0x7f00\n"), None);
        assert_eq!(parse_syscall("2 0x1 0x2\n"), None, "cut short");
        // Debian 6.1 (the VM suite's guest): busybox `cat` opens with openat
        assert_eq!(
            parse_syscall(
                "257 0xffffff9c 0x7ffe31c2bf5b 0x0 0x0 0x0 0x0 0x7ffe31c2ad80 0x47b5e1\n"
            ),
            Some((257, [0xffff_ff9c, 0x7ffe_31c2_bf5b, 0, 0, 0, 0]))
        );
    }

    #[test]
    fn a_task_not_yet_blocked_is_read_again_until_it_is() {
        let opener = "257 0xffffff9c 0x7ffd 0x0 0x0 0x0 0x0 0x7ffc 0x47b5e1\n";
        let mut reads = 0;
        let text = blocked_syscall_text(
            || {
                reads += 1;
                if reads < 3 { "running\n" } else { opener }.to_string()
            },
            Duration::from_secs(30),
        );
        assert_eq!((text.as_str(), reads), (opener, 3));
        // a blocked task is read once
        let mut reads = 0;
        blocked_syscall_text(
            || {
                reads += 1;
                opener.to_string()
            },
            Duration::from_secs(30),
        );
        assert_eq!(reads, 1);
        // a task that never blocks: `running` after the patience ran out
        let text = blocked_syscall_text(|| "running\n".to_string(), Duration::from_millis(20));
        assert_eq!(parse_syscall(&text), None);
    }

    #[test]
    fn namespace_links_and_cgroup_lines() {
        assert_eq!(ns_inode("mnt:[4026531841]"), 4_026_531_841);
        assert_eq!(ns_inode("nonsense"), 0);
        assert_eq!(
            cgroup_v2_path("12:pids:/x\n0::/user.slice/a.scope\n"),
            Some(PathBuf::from("/user.slice/a.scope"))
        );
        assert_eq!(cgroup_v2_path("12:pids:/x\n"), None);
    }

    #[test]
    fn reads_this_thread() {
        let me = std::process::id();
        let f = task_facts(Path::new("/proc"), me);
        assert_eq!(f.tgid, me);
        assert_eq!(f.ppid, std::os::unix::process::parent_id());
        let own = process_identity(Path::new("/proc"), me).expect("own stat");
        assert_eq!(f.comm, own.comm);
        assert_eq!(f.start_ns, own.start_boot_ns);
        assert_ne!(f.start_ns, 0);
        // another thread: its own comm, its process's start time
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("kive-facts-t".into())
            .spawn(move || {
                // SAFETY: gettid takes no argument and cannot fail
                let tid = unsafe { libc::gettid() };
                tx.send(tid as u32).expect("send tid");
                let _ = done_rx.recv();
            })
            .expect("spawn");
        let tid = rx.recv().expect("tid");
        let other = task_facts(Path::new("/proc"), tid);
        drop(done_tx);
        t.join().expect("join");
        assert_eq!(other.comm, "kive-facts-t");
        assert_eq!(other.tgid, me);
        assert_eq!(other.start_ns, own.start_boot_ns, "the process's start");
        assert_ne!(f.mnt_ns, 0);
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(f.exe, exe.to_string_lossy());
        assert!(!f.cmdline.is_empty());
        assert_eq!(
            task_facts(Path::new("/proc"), u32::MAX),
            TaskFacts::default()
        );
    }
}
