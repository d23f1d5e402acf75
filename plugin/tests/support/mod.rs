//! Shared by the kernel tests: an engine with a channel of decoded events,
//! and helpers to run processes that touch files.
#![allow(dead_code)]

pub mod apiserver;
pub mod container;
pub mod tiers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use kive::trap::{Engine, EngineConfig, RawEvent, TierChoice, TrapKey};

/// Mounts the engine needs (bpffs, tracefs, securityfs for the LSM list);
/// idempotent.
pub fn ensure_mounts() {
    let _ = Command::new("sh")
        .arg("-c")
        .arg("mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security")
        .status();
}

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
