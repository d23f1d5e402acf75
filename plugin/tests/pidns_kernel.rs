//! The loader's own opens never fire, in any pid namespace: the engine is
//! loaded by a process that is pid 1 of a pid namespace of its own (Falco
//! in a container), its own reads of a trapped file give no event, a host
//! process's do. (One test in its own binary: it forks.)

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use kive::trap::{Engine, EngineConfig, RawEvent, TierChoice, TrapValue};
use support::{key_of, world_dir};

/// Exit codes of the loader in its namespace.
const SEEN_HOST_ONLY: i32 = 0;
const OWN_OPEN_FIRED: i32 = 10;
const HOST_OPEN_MISSED: i32 = 11;
const NOT_PID_ONE: i32 = 12;
const FAILED: i32 = 13;

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: pipe(2) succeeded: both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (r.into(), w.into())
}

/// The loader, pid 1 of its own pid namespace: loads the engine, arms the
/// file, reads it itself, says "ready", and reports whether any event
/// came before the host process's (whose pid the parent sends).
fn loader(file: &std::path::Path, mut ready: std::fs::File, host_pid: std::fs::File) -> i32 {
    if std::process::id() != 1 {
        return NOT_PID_ONE;
    }
    let cfg = EngineConfig {
        tier: TierChoice::Tracepoint,
        ..EngineConfig::default()
    };
    let Ok(mut engine) = Engine::load(&cfg) else {
        return FAILED;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if engine
        .start_reader(Duration::from_millis(5), move |d| {
            if let Ok(ev) = RawEvent::decode(d) {
                let _ = tx.send(ev);
            }
        })
        .is_err()
    {
        return FAILED;
    }
    let key = key_of(file);
    let value = TrapValue {
        trap_id: 1,
        block: false,
        conditions: 0,
    };
    if engine.arm(key, value).is_err() {
        return FAILED;
    }
    for _ in 0..3 {
        if std::fs::read(file).is_err() {
            return FAILED;
        }
    }
    if ready.write_all(b"R").is_err() {
        return FAILED;
    }
    let mut line = String::new();
    if BufReader::new(host_pid).read_line(&mut line).is_err() {
        return FAILED;
    }
    let Ok(host) = line.trim().parse::<u32>() else {
        return FAILED;
    };
    // the ring is in order: our own reads would come before the host's
    let deadline = Instant::now() + support::DEADLINE;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ev) if ev.key != key => {}
            Ok(ev) if ev.tgid == host => return SEEN_HOST_ONLY,
            Ok(_) => return OWN_OPEN_FIRED,
            Err(_) => break,
        }
    }
    HOST_OPEN_MISSED
}

#[test]
fn the_loader_in_its_own_pid_namespace_is_exempt_and_host_opens_fire() {
    support::ensure_mounts();
    let d = world_dir();
    let f = d.path().join("secret.txt");
    std::fs::write(&f, "decoy").expect("write");
    let (mut ready_r, ready_w) = pipe();
    let (pid_r, mut pid_w) = pipe();

    // SAFETY: fork in a test binary with this one test; the child only
    // calls unshare, fork, waitpid and _exit, the grandchild runs the loader
    // (a fresh single-threaded process) and _exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: plain syscalls in the forked child, which never returns.
        unsafe {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                libc::_exit(FAILED);
            }
            let grandchild = libc::fork();
            if grandchild == 0 {
                let code = std::panic::catch_unwind(|| {
                    loader(
                        &f,
                        ready_w.try_clone().expect("fd"),
                        pid_r.try_clone().expect("fd"),
                    )
                })
                .unwrap_or(FAILED);
                libc::_exit(code);
            }
            let mut status = 0;
            if grandchild < 0 || libc::waitpid(grandchild, &mut status, 0) != grandchild {
                libc::_exit(FAILED);
            }
            libc::_exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                FAILED
            });
        }
    }
    drop(ready_w);
    drop(pid_r);
    let mut byte = [0u8; 1];
    let got = ready_r.read(&mut byte);
    assert!(
        matches!(got, Ok(1)),
        "the loader in its pid namespace did not get ready ({got:?})"
    );
    // a host process reads the trapped file
    let (host_pid, out) = support::run(Command::new("cat").arg(&f));
    assert!(out.status.success());
    writeln!(pid_w, "{host_pid}").expect("send the host pid");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(rc, child, "waitpid");
    assert!(
        libc::WIFEXITED(status),
        "the loader's namespace ended by a signal"
    );
    match libc::WEXITSTATUS(status) {
        SEEN_HOST_ONLY => {}
        OWN_OPEN_FIRED => panic!("the loader's own reads fired inside its pid namespace"),
        HOST_OPEN_MISSED => panic!("the host process's read (pid {host_pid}) gave no event"),
        NOT_PID_ONE => panic!("the loader was not pid 1 of a new pid namespace"),
        other => panic!("the loader failed (exit {other})"),
    }
}
