//! `kive run` as a child process: its stdout and stderr as channels of
//! lines, waiting for a line, Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A running `kive`.
pub struct Kive {
    /// The process.
    pub child: Child,
    /// Its stdout lines.
    pub stdout: Receiver<String>,
    /// Its stderr lines.
    pub stderr: Receiver<String>,
}

pub fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn spawn(args: &[&str]) -> Kive {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kive"));
    cmd.args(args);
    spawn_cmd(cmd)
}

/// `kive ARGS` in a mount namespace of its own with a private, empty
/// tmpfs on /tmp: the embedded policy's decoy (/tmp/kive-secret.txt) lives
/// and dies there, never on the machine's /tmp (other runs share it).
/// `unshare` execs kive, so the child's pid is kive's.
pub fn spawn_private_tmp(args: &[&str]) -> Kive {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        // the binary is opened before the tmpfs hides /tmp: the checkout
        // (and so target/) may itself live under /tmp
        .arg("exec 3<\"$0\" && mount -t tmpfs kive-test /tmp && exec /proc/self/fd/3 \"$@\"")
        .arg(env!("CARGO_BIN_EXE_kive"))
        .args(args);
    spawn_cmd(cmd)
}

/// `cmd` set up as the tests run kive: info logs without colour, stdin
/// closed, stdout and stderr piped.
pub fn piped(cmd: &mut Command) -> &mut Command {
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

pub fn spawn_cmd(mut cmd: Command) -> Kive {
    super::ensure_mounts();
    let mut child = piped(&mut cmd).spawn().expect("kive starts");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    Kive {
        child,
        stdout,
        stderr,
    }
}

/// Stderr lines until one contains `needle` (all lines read so far returned).
pub fn wait_line(rx: &Receiver<String>, needle: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains(needle);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} in {seen:#?}");
}

/// Sends `sig` to kive.
pub fn signal(k: &Kive, sig: i32) {
    // SAFETY: kill(2) on our own child's pid, which has not been reaped
    let rc = unsafe { libc::kill(k.child.id() as i32, sig) };
    assert_eq!(rc, 0, "signal {sig} to kive");
}

/// Waits (at most [`super::DEADLINE`]) for kive to exit.
pub fn wait_exit(k: &mut Kive) -> std::process::ExitStatus {
    let deadline = Instant::now() + super::DEADLINE;
    loop {
        if let Some(st) = k.child.try_wait().expect("wait") {
            return st;
        }
        assert!(Instant::now() < deadline, "kive did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C, and its exit status.
pub fn stop(mut k: Kive) -> std::process::ExitStatus {
    signal(&k, libc::SIGINT);
    wait_exit(&mut k)
}
