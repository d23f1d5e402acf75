//! Attacks on the kernel side, on this machine's kernel (tracepoint tier):
//! drowning a trap in a flood, forging alert lines, hiding behind cut
//! paths, memfd and deleted executables, and opening a trapped file the
//! ways the syscall tracepoints used to miss (ia32 `int 0x80`,
//! `open_by_handle_at`). Each test is the attack; its assertions are what
//! kive must still see.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kive::alert::text::to_text;
use kive::alert::KiveAlert;
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::TierChoice;
use support::exec::{copy_tool, real_exe, tool_at};
use support::{alerts_until, run, wait_until, world_dir, DEADLINE};

fn config() -> RuntimeConfig {
    support::runtime::config(TierChoice::Tracepoint)
}

fn start(cfg: &RuntimeConfig, trapped: &Path) -> Runtime {
    support::runtime::start(
        cfg,
        &support::runtime::host_traps("attack", &[(trapped, "")]),
    )
}

/// A trapped file in a fresh world-readable directory.
fn trapped_file() -> (tempfile::TempDir, PathBuf) {
    let d = world_dir();
    let f = d.path().join("secret.txt");
    std::fs::write(&f, "decoy").expect("write decoy");
    (d, f)
}

/// The alerts of one process: each step of these tests gives one alert,
/// waited for (then none more within the quiet window); an alert of
/// another process is left out, so the callers' count catches it.
fn alerts_of(rt: &Runtime, pid: u32) -> Vec<KiveAlert> {
    alerts_until(rt, 1)
        .into_iter()
        .filter(|a| a.process.tgid == pid)
        .collect()
}

/// Spawns `true` in a child that first runs `open` between fork and exec
/// (`open` gives a syscall's return: a negative errno fails the spawn) and
/// waits for it; the child's pid is the opener's.
fn child_opening(what: &str, open: impl Fn() -> i64 + Send + Sync + 'static) -> u32 {
    let mut cmd = Command::new("true");
    // SAFETY: `open` makes raw syscalls only (no allocation, no lock), and
    // an `io::Error` from a raw errno allocates nothing: what may run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || match open() {
            r if r < 0 => Err(std::io::Error::from_raw_os_error(-r as i32)),
            _ => Ok(()),
        });
    }
    let (pid, out) = run(cmd.stdin(Stdio::null()));
    assert!(out.status.success(), "{what}: {out:?}");
    pid
}

/// A process that opens `file` in a loop itself (a shell builtin with a
/// redirection: no fork per open).
fn flooder(file: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("while :; do : < \"$0\"; done")
        .arg(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn flooder")
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn two_flooders_cannot_drown_the_reads_of_a_third_process() {
    let mut cfg = config();
    // the ring of the attack: 64 KiB, about 45 events (read by the reader
    // thread, as Falco reads a ring this small)
    cfg.engine.ring_bytes = 64 * 1024;
    flooders_against_a_victim(&cfg);
}

#[test]
fn two_flooders_cannot_drown_a_victim_while_the_consumer_reads_the_ring() {
    // as Falco reads the smallest ring it reads itself: 1 MiB, no reader
    // thread, the spare thread draining while the consumer is away
    let mut cfg = RuntimeConfig {
        read_in_caller: true,
        ..config()
    };
    cfg.engine.ring_bytes = 1 << 20;
    flooders_against_a_victim(&cfg);
}

/// Two processes flood the trap; a third reads it five times: every one
/// of its reads is an alert, the flooders' held-back hits are counted and
/// reported.
fn flooders_against_a_victim(cfg: &RuntimeConfig) {
    let (_d, f) = trapped_file();
    let rt = start(cfg, &f);
    let flooders = Killed(vec![flooder(&f), flooder(&f)]);
    let flood_pids: Vec<u32> = flooders.0.iter().map(Child::id).collect();

    // the flood is on once the kernel holds events back
    wait_until("the flood limit holding the flooders' events back", || {
        while rt.try_next_event().is_some() {}
        rt.metrics().kernel.limited > 0
    });

    // the victim: one process, five reads at times of its own
    let mut victim = Command::new("sh")
        .arg("-c")
        .arg("for i in 1 2 3 4 5; do : < \"$0\"; sleep 0.05; done")
        .arg(&f)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn victim");
    let victim_pid = victim.id();
    assert!(victim.wait().expect("victim ends").success());

    let mut victim_alerts = 0;
    let mut flood_alerts = 0;
    let mut flood_suppressed = 0;
    let mut losses = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline
        && (victim_alerts < 5
            || flood_suppressed == 0
            || !losses
                .iter()
                .any(|l: &kive::alert::LossMetadata| l.limited > 0))
    {
        if let Some(report) = rt.loss_report() {
            losses.push(
                report
                    .metadata
                    .loss
                    .expect("a loss report has metadata.loss"),
            );
            assert_eq!(report.metadata.path, "", "a loss report names no file");
        }
        if let Some(ev) = rt.next_event(Duration::from_millis(20)) {
            for a in rt.alerts_for(&ev) {
                if a.process.tgid == victim_pid {
                    victim_alerts += 1;
                } else if flood_pids.contains(&a.process.tgid) {
                    flood_alerts += 1;
                    flood_suppressed += a.metadata.suppressed.unwrap_or(0);
                }
            }
        }
    }
    drop(flooders);
    let m = rt.metrics();
    assert_eq!(
        victim_alerts, 5,
        "all five reads of the victim are alerts despite the flood (metrics {m:?})"
    );
    assert!(flood_alerts > 0, "the flooders themselves are reported");
    assert!(
        flood_suppressed > 0,
        "a flooder's alert carries how many of its hits were held back"
    );
    assert!(
        losses.iter().any(|l| l.limited > 0),
        "the held-back hits reach the consumer as a loss report: {losses:?}"
    );
    assert!(m.kernel.limited > 0, "and are counted: {m:?}");
}

#[test]
fn a_binary_past_the_capture_limits_is_marked_truncated_not_shown_whole() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let base = world_dir();
    // 256 bytes: /<250 x A>/usr/bin/cat keeps only /usr/bin/cat
    let long = base.path().join("A".repeat(250)).join("usr/bin");
    // 24 levels: /d/d/.../d/cat (30 levels)
    let deep = (0..30).fold(base.path().to_path_buf(), |p, _| p.join("d"));
    for dir in [&long, &deep] {
        std::fs::create_dir_all(dir).expect("mkdir");
        copy_tool("/usr/bin/cat", &dir.join("cat"));
    }
    let (pid, out) = run(Command::new(long.join("cat")).arg(&f));
    assert!(out.status.success());
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    let p = &got[0].process;
    assert_eq!(p.binary, ".../usr/bin/cat", "the cut is shown");
    assert_ne!(p.binary, "/usr/bin/cat");
    assert!(
        p.flags.contains(&"binary-truncated".to_string()),
        "{:?}",
        p.flags
    );

    let (pid, out) = run(Command::new(deep.join("cat")).arg(&f).current_dir(&deep));
    assert!(out.status.success());
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    let p = &got[0].process;
    assert!(p.binary.starts_with(".../d/d/"), "{}", p.binary);
    assert!(p.binary.ends_with("/d/cat"), "{}", p.binary);
    for flag in ["binary-truncated", "cwd-truncated"] {
        assert!(p.flags.contains(&flag.to_string()), "{flag}: {:?}", p.flags);
    }
    assert!(p.cwd.starts_with(".../d/"), "{}", p.cwd);

    // a path within the limits is whole and unflagged
    let (pid, _) = run(Command::new("/usr/bin/cat").arg(&f));
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].process.binary, real_exe("/usr/bin/cat"));
    assert!(
        !got[0].process.flags.iter().any(|f| f.starts_with("binary")),
        "{:?}",
        got[0].process.flags
    );
}

#[test]
fn memfd_and_deleted_executables_are_marked() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let work = world_dir();
    // cat copied into a memfd, executed from there (what fexecve does): no
    // CLOEXEC, the child opens it again as /proc/self/fd/N
    let memfd =
        rustix::fs::memfd_create("payload", rustix::fs::MemfdFlags::empty()).expect("memfd_create");
    let mut payload = std::fs::File::open("/usr/bin/cat").expect("open cat");
    std::io::copy(
        &mut payload,
        &mut std::fs::File::from(memfd.try_clone().expect("dup")),
    )
    .expect("copy cat into the memfd");
    let exe = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
    let (pid, out) = run(tool_at(&exe, "cat").arg(&f));
    drop(memfd);
    assert!(
        out.status.success(),
        "memfd exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    let p = &got[0].process;
    assert_eq!(p.flags, ["binary-memfd"], "binary {}", p.binary);
    assert_eq!(p.binary, "/memfd:payload");

    // a shell that deletes its own executable, then reads the decoy
    let sh = work.path().join("gone-sh");
    copy_tool("/bin/sh", &sh);
    let (pid, out) = run(tool_at(&sh, "sh")
        .arg("-c")
        .arg("rm \"$0\" && : < \"$1\"")
        .arg(&sh)
        .arg(&f));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sh.exists());
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].process.flags, ["binary-deleted"]);
    assert_eq!(got[0].process.binary, sh.display().to_string());
}

#[test]
fn a_binary_named_with_a_newline_prints_one_text_line() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let work = world_dir();
    let name = "x\n2030-01-01T00:00:00Z policy=forged access=read binary=sh";
    let exe = work.path().join(name);
    copy_tool("/bin/sh", &exe);
    let (pid, out) = run(tool_at(&exe, "sh").arg("-c").arg(": < \"$0\"").arg(&f));
    assert!(out.status.success());
    let got = alerts_of(&rt, pid);
    assert_eq!(got.len(), 1, "{got:#?}");
    let a = &got[0];
    assert!(
        a.process.binary.ends_with(name),
        "the JSON keeps the name: {:?}",
        a.process.binary
    );
    assert!(
        a.process.comm.contains('\n'),
        "comm too: {:?}",
        a.process.comm
    );
    let line = to_text(a);
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    assert!(
        line.contains(r"x\n2030-01-01T00:00:00Z policy=forged"),
        "{line}"
    );
    assert!(line.contains(" policy=attack "), "{line}");
}

/// An i386 syscall through `int 0x80` from this 64-bit process (what a
/// 32-bit program does); its pointer arguments must lie below 4 GiB.
#[cfg(target_arch = "x86_64")]
fn int80(nr: u32, b: u64, c: u64, d: u64) -> i64 {
    let ret: i64;
    // SAFETY: a syscall on plain values and a pointer the caller keeps
    // mapped; rbx (reserved by LLVM) is swapped in and back around it, the
    // registers the compat entry may clobber are declared.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) b => _,
            inlateout("rax") u64::from(nr) => ret,
            in("rcx") c,
            in("rdx") d,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    // the compat call returns a 32-bit value
    i64::from(ret as i32)
}

/// `path`, NUL-terminated, in a page mapped below 4 GiB (where an
/// `int 0x80` call can point); unmapped on drop.
#[cfg(target_arch = "x86_64")]
struct LowPath(*mut u8);

#[cfg(target_arch = "x86_64")]
impl LowPath {
    fn new(path: &Path) -> Self {
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < 4096, "path too long for one page");
        // SAFETY: a fresh anonymous mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap MAP_32BIT");
        // SAFETY: the page is ours, zeroed, and longer than the path.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), bytes.len()) };
        Self(p.cast())
    }

    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for LowPath {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by no one after the child ended.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn ia32_compat_opens_through_int_0x80_are_seen() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let low = LowPath::new(&f);
    let path = low.addr();
    // i386 open = 5 (x86_64: fstat), openat = 295 (x86_64: preadv)
    const AT_FDCWD: u64 = -100i64 as u64;
    for (how, nr, b, c) in [("open", 5, path, 0), ("openat", 295, AT_FDCWD, path)] {
        let pid = child_opening(&format!("int 0x80 {how}"), move || int80(nr, b, c, 0));
        let got = alerts_of(&rt, pid);
        assert_eq!(got.len(), 1, "int 0x80 {how}: {got:#?}");
        assert_eq!(got[0].metadata.mask, 36, "a read");
    }
    // the x86_64 calls with those numbers (fstat, preadv) on the trapped
    // file are no opens
    let (pid, _) = run(Command::new("sh")
        .arg("-c")
        .arg("exec 3< \"$0\"; stat -L /dev/fd/3 >/dev/null")
        .arg(&f));
    assert_eq!(alerts_of(&rt, pid).len(), 1, "one open, fstat adds nothing");
}

/// The `struct file_handle` of `path` (`name_to_handle_at`), in u64s.
fn file_handle(path: &Path) -> Vec<u64> {
    const MAX_HANDLE_SZ: usize = 128;
    let mut buf = vec![0u64; 1 + MAX_HANDLE_SZ / 8];
    let fh = buf.as_mut_ptr().cast::<libc::file_handle>();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in the path");
    let mut mount_id = 0;
    // SAFETY: `fh` points at a buffer of the header plus MAX_HANDLE_SZ
    // bytes, as handle_bytes says; `c` and `mount_id` outlive the call.
    let rc = unsafe {
        (*fh).handle_bytes = MAX_HANDLE_SZ as u32;
        libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), fh, &mut mount_id, 0)
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    buf
}

#[test]
fn open_by_handle_at_of_a_trapped_file_is_seen_on_both_tracepoint_tiers() {
    let (_d, f) = trapped_file();
    let handle = file_handle(&f);
    // any fd on the file's filesystem names the mount
    let mount = std::fs::File::open(f.parent().expect("a parent")).expect("open the dir");
    let (mount_fd, fh) = (mount.as_raw_fd(), handle.as_ptr() as usize);
    for (tier, hook) in [
        (TierChoice::Tracepoint, "tp_btf/sys_exit"),
        (TierChoice::TracepointClassic, "tracepoint/sys_exit_open"),
    ] {
        let mut cfg = config();
        cfg.engine.tier = tier;
        let rt = start(&cfg, &f);
        let pid = child_opening("open_by_handle_at", move || {
            // SAFETY: the handle filled by name_to_handle_at and the mount
            // fd stay alive (the parent holds both) until the child ended.
            let fd = unsafe {
                libc::open_by_handle_at(mount_fd, fh as *mut libc::file_handle, libc::O_RDONLY)
            };
            if fd < 0 {
                -i64::from(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO),
                )
            } else {
                i64::from(fd)
            }
        });
        let got = alerts_of(&rt, pid);
        assert_eq!(got.len(), 1, "{tier:?}: {got:#?}");
        assert_eq!(got[0].metadata.mask, 36);
        assert_eq!(got[0].metadata.hook, hook);
    }
}
