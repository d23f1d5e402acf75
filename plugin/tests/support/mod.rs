//! Shared by the kernel tests: an engine with a channel of decoded events,
//! and helpers to run processes that touch files.
#![allow(dead_code)]

pub mod apiserver;
pub mod cli;
pub mod container;
pub mod exec;
pub mod fuse;
pub mod logs;
pub mod mounts;
pub mod rescan;
pub mod runtime;
pub mod scenarios;
pub mod tiers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use kive::trap::{Engine, EngineConfig, RawEvent, TierChoice, TrapKey};

pub use mounts::ensure_mounts;

/// An engine on the given tier and the events it reports.
pub fn engine(tier: TierChoice) -> (Engine, Receiver<RawEvent>) {
    ensure_mounts();
    let cfg = EngineConfig {
        tier,
        ..EngineConfig::default()
    };
    let mut engine = Engine::load(&cfg).unwrap_or_else(|e| {
        panic!("the trap engine must load on this machine's kernel (root, BTF): {e}")
    });
    let (tx, rx) = channel();
    engine
        .start_reader(Duration::from_millis(5), move |data| {
            let ev = RawEvent::decode(data).expect("kernel records decode");
            let _ = tx.send(ev);
        })
        .expect("ring reader starts");
    (engine, rx)
}

/// Events received within `wait` for `key`.
pub fn events_for(rx: &Receiver<RawEvent>, key: TrapKey, wait: Duration) -> Vec<RawEvent> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ev) if ev.key == key => out.push(ev),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

/// Runs a command to completion, returning its pid; panics if it cannot start.
pub fn run(cmd: &mut Command) -> (u32, std::process::Output) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("child finishes");
    (pid, out)
}

/// The trap key of a file as kive computes it (through the host root).
pub fn key_of(path: &Path) -> TrapKey {
    let root = kive::node::Root::open("/").expect("open /");
    root.resolve(path.to_str().expect("utf-8 path"))
        .unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
        .key
}

/// A temp dir that other users can traverse (0755).
pub fn world_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The threads named `name` of process `pid` (`"self"`: this one).
pub fn threads_named(pid: &str, name: &str) -> usize {
    let task = format!("/proc/{pid}/task");
    std::fs::read_dir(&task)
        .unwrap_or_else(|e| panic!("{task}: {e}"))
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// `v` in order (kernel keys, to compare sets).
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The generous deadline of every wait for a condition: a slow machine
/// (the Debian VM under TCG, 2 busy cores) meets it, a broken build does not.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Polls `f` until it gives a value; panics naming `what` after
/// [`DEADLINE`]. The one wait-for-a-condition helper of the kernel tests.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] a condition.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    wait_for(what, || f().then_some(()))
}

/// How long a test watches for events that must NOT come (none at all,
/// or none past the expected ones): 400 ms, times `KIVE_TEST_TIME_SCALE`
/// (`make test-vm` sets it for the emulated guest). Only absence is
/// checked this way; whatever must arrive is waited for with [`DEADLINE`].
pub fn quiet() -> Duration {
    let scale = std::env::var("KIVE_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Duration::from_millis(400) * scale
}

/// Alerts of the events a runtime receives until `n` came (then no more
/// within [`quiet`]); panics after [`DEADLINE`] with what came.
pub fn alerts_until(rt: &kive::runtime::Runtime, n: usize) -> Vec<kive::alert::KiveAlert> {
    let mut out = until(n, "alerts", |left| {
        rt.next_event(left)
            .map(|ev| rt.alerts_for(&ev))
            .unwrap_or_default()
    });
    out.extend(alerts(rt, quiet()));
    out
}

/// What `next` (given the time left) returns until `n` came; panics after
/// [`DEADLINE`] with what came (`what`: what they are).
fn until<T: std::fmt::Debug>(
    n: usize,
    what: &str,
    mut next: impl FnMut(Duration) -> Vec<T>,
) -> Vec<T> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("{} of {n} {what} after {DEADLINE:?}: {out:#?}", out.len()));
        out.extend(next(left));
    }
    out
}

/// Events for `key` until `n` came (then none more within [`quiet`]);
/// panics after [`DEADLINE`] with what came.
pub fn events_until(rx: &Receiver<RawEvent>, key: TrapKey, n: usize) -> Vec<RawEvent> {
    let mut out = until(n, "events", |left| {
        rx.recv_timeout(left)
            .into_iter()
            .filter(|ev| ev.key == key)
            .collect()
    });
    out.extend(events_for(rx, key, quiet()));
    out
}

/// Alerts of the events a runtime receives within `wait`.
pub fn alerts(rt: &kive::runtime::Runtime, wait: Duration) -> Vec<kive::alert::KiveAlert> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(ev) = rt.next_event(left) {
            out.extend(rt.alerts_for(&ev));
        }
    }
    out
}
