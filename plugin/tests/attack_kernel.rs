//! Attacks on the kernel side, on this machine's kernel (tracepoint tier):
//! drowning a trap in a flood, forging alert lines, hiding behind cut
//! paths, memfd and deleted executables, and opening a trapped file the
//! ways the syscall tracepoints used to miss (ia32 `int 0x80`,
//! `open_by_handle_at`). Each test is the attack; its assertions are what
//! kive must still see.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kive::alert::text::to_text;
use kive::alert::KiveAlert;
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::TierChoice;
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

/// Compiles a small static C program (no PIE: its data sits below 4 GiB,
/// where an `int 0x80` call can point).
fn cc(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&c, src).expect("write C source");
    let out = Command::new("cc")
        .args(["-O1", "-no-pie", "-static", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("running cc (gcc is needed by this test): {e}"));
    assert!(
        out.status.success(),
        "cc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
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
    let (_d, f) = trapped_file();
    let mut cfg = config();
    // the ring of the attack: 64 KiB, about 55 events
    cfg.engine.ring_bytes = 64 * 1024;
    let rt = start(&cfg, &f);
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
        std::fs::copy("/usr/bin/cat", dir.join("cat")).expect("copy cat");
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
    assert_eq!(got[0].process.binary, "/usr/bin/cat");
    assert!(
        !got[0].process.flags.iter().any(|f| f.starts_with("binary")),
        "{:?}",
        got[0].process.flags
    );
}

const MEMFD_EXEC: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
	struct stat st;
	int src = open("/usr/bin/cat", O_RDONLY);
	int mfd = memfd_create("payload", 0);
	if (argc < 2 || src < 0 || mfd < 0 || fstat(src, &st)) return 2;
	off_t off = 0;
	while (off < st.st_size)
		if (sendfile(mfd, src, &off, st.st_size - off) <= 0) return 3;
	char *args[] = {"cat", argv[1], 0};
	fexecve(mfd, args, environ);
	perror("fexecve");
	return 4;
}
"#;

#[test]
fn memfd_and_deleted_executables_are_marked() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let work = world_dir();
    let memfd = cc(work.path(), "memfd_exec", MEMFD_EXEC);
    let (pid, out) = run(Command::new(&memfd).arg(&f));
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
    std::fs::copy("/bin/sh", &sh).expect("copy sh");
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (pid, out) = run(Command::new(&sh)
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
    std::fs::copy("/bin/sh", &exe).expect("copy sh");
    let (pid, out) = run(Command::new(&exe).arg("-c").arg(": < \"$0\"").arg(&f));
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

const INT80_OPEN: &str = r#"
#include <stdio.h>
#include <string.h>
static char path[4096];
int main(int argc, char **argv) {
	long ret;
	if (argc < 3) return 2;
	strncpy(path, argv[2], sizeof(path) - 1);
	if (!strcmp(argv[1], "open")) /* i386 open = 5 (x86_64: fstat) */
		__asm__ volatile("int $0x80" : "=a"(ret) : "a"(5L), "b"(path), "c"(0L), "d"(0L) : "memory");
	else /* i386 openat = 295 (x86_64: preadv) */
		__asm__ volatile("int $0x80" : "=a"(ret) : "a"(295L), "b"(-100L), "c"(path), "d"(0L) : "memory");
	printf("%ld\n", ret);
	return ret < 0;
}
"#;

#[test]
fn ia32_compat_opens_through_int_0x80_are_seen() {
    let (_d, f) = trapped_file();
    let rt = start(&config(), &f);
    let work = world_dir();
    let prog = cc(work.path(), "int80_open", INT80_OPEN);
    for how in ["open", "openat"] {
        let (pid, out) = run(Command::new(&prog).arg(how).arg(&f));
        assert!(
            out.status.success(),
            "int 0x80 {how} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
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

const BY_HANDLE: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
	int mount_id;
	struct file_handle *fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
	char dir[4096];
	if (argc < 2 || !fh) return 2;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, argv[1], fh, &mount_id, 0)) { perror("name_to_handle_at"); return 3; }
	strncpy(dir, argv[1], sizeof(dir) - 1);
	int mfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
	int fd = open_by_handle_at(mfd, fh, O_RDONLY);
	if (fd < 0) { perror("open_by_handle_at"); return 4; }
	printf("%d\n", fd);
	return 0;
}
"#;

#[test]
fn open_by_handle_at_of_a_trapped_file_is_seen_on_both_tracepoint_tiers() {
    let (_d, f) = trapped_file();
    let work = world_dir();
    let prog = cc(work.path(), "by_handle", BY_HANDLE);
    for (tier, hook) in [
        (TierChoice::Tracepoint, "tp_btf/sys_exit"),
        (TierChoice::TracepointClassic, "tracepoint/sys_exit_open"),
    ] {
        let mut cfg = config();
        cfg.engine.tier = tier;
        let rt = start(&cfg, &f);
        let (pid, out) = run(Command::new(&prog).arg(&f));
        assert!(
            out.status.success(),
            "open_by_handle_at: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = alerts_of(&rt, pid);
        assert_eq!(got.len(), 1, "{tier:?}: {got:#?}");
        assert_eq!(got[0].metadata.mask, 36);
        assert_eq!(got[0].metadata.hook, hook);
    }
}
