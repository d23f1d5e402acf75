//! Scenarios the kernel tests run on more than one tier: the same steps
//! and the same assertions for the eBPF tiers (`engine_kernel`,
//! `runtime_kernel`) and the fanotify tier (`fanotify_kernel`). Each test
//! file passes how its tier arms a file (or starts its runtime) and adds
//! what only its tier shows.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use kive::policy::CompiledTrap;
use kive::runtime::Runtime;
use kive::trap::{Action, Engine, RawEvent, TierChoice, TrapKey, TrapValue};

use super::exec::{copy_tool, tool_at};
use super::{engine, events_for, events_until, key_of, quiet, run, world_dir};

/// How a tier's tests arm a file on its engine (by key on the eBPF tiers,
/// through an `O_PATH` pin on fanotify); gives the key.
pub type ArmFn = fn(&Engine, &Path, TrapValue) -> TrapKey;

/// An audit trap value with id `id`.
pub fn audit(id: u32) -> TrapValue {
    TrapValue {
        trap_id: id,
        block: false,
        conditions: 0,
    }
}

/// Arms by key (the eBPF tiers need no file).
pub fn arm_by_key(e: &Engine, path: &Path, v: TrapValue) -> TrapKey {
    let key = key_of(path);
    e.arm(key, v)
        .unwrap_or_else(|err| panic!("arming {}: {err}", path.display()));
    key
}

/// A file armed on a fresh engine of `tier`, in its own world-readable dir.
pub struct Trapped {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub engine: Engine,
    pub rx: Receiver<RawEvent>,
    pub key: TrapKey,
}

/// Writes `content` to `name` (mode 0644) and arms it with trap id `id`.
pub fn trapped(tier: TierChoice, arm: ArmFn, name: &str, content: &str, id: u32) -> Trapped {
    armed_as(tier, arm, name, id, |path| {
        std::fs::write(path, content).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    })
}

/// `name` in a fresh world-readable dir, made by `make`, armed with trap id
/// `id` on a fresh engine of `tier`.
fn armed_as(
    tier: TierChoice,
    arm: ArmFn,
    name: &str,
    id: u32,
    make: impl FnOnce(&Path),
) -> Trapped {
    let dir = world_dir();
    let path = dir.path().join(name);
    make(&path);
    let (engine, rx) = engine(tier);
    let key = arm(&engine, &path, audit(id));
    Trapped {
        dir,
        path,
        engine,
        rx,
        key,
    }
}

/// `cat` of a trapped file (run in the file's directory): allowed, one
/// event with the reader's ids, `MAY_OPEN|MAY_READ`, trap id 7, audit, the
/// test process as parent, a cgroup and a mount namespace; gives it with
/// the cat's pid.
pub fn cat_of_a_trapped_file(tier: TierChoice, arm: ArmFn) -> (Trapped, RawEvent, u32) {
    let t = trapped(tier, arm, "secret.txt", "s3cr3t", 7);
    assert_eq!(t.engine.armed_keys(), [t.key]);
    let (pid, out) = run(Command::new("cat").arg(&t.path).current_dir(t.dir.path()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"s3cr3t", "the open was allowed");
    let evs = events_until(&t.rx, t.key, 1);
    assert_eq!(evs.len(), 1, "one open, one event: {evs:#?}");
    let ev = evs[0].clone();
    assert_eq!((ev.tgid, ev.pid), (pid, pid), "the cat's pid and tid");
    assert_eq!((ev.uid, ev.gid), (0, 0));
    assert_eq!(ev.comm(), "cat");
    assert_eq!(ev.mask, 0x20 | 0x4, "MAY_OPEN|MAY_READ");
    assert_eq!(ev.trap_id, 7);
    assert_eq!(ev.action, Action::Audit);
    assert_eq!(ev.ppid, std::process::id(), "parent is the test process");
    let me = std::env::current_exe().expect("test binary");
    assert_eq!(
        ev.parent_exe(),
        me.display().to_string(),
        "the parent's executable"
    );
    assert_ne!(ev.cgroup_id, 0);
    assert_ne!(ev.mnt_ns, 0);
    (t, ev, pid)
}

/// `cat` of a file next to a trapped one: no event, no hit.
pub fn an_untrapped_file_gives_no_event(tier: TierChoice, arm: ArmFn) {
    let t = trapped(tier, arm, "trapped", "t", 1);
    let free = t.dir.path().join("free");
    std::fs::write(&free, "f").expect("write");
    run(Command::new("cat").arg(&free));
    assert!(events_for(&t.rx, key_of(&free), quiet()).is_empty());
    assert!(events_for(&t.rx, t.key, quiet()).is_empty());
    assert_eq!(t.engine.kernel_stats().hits, 0, "no hit counted");
}

/// The loading process reads its own trapped file (a block trap where
/// the tier can block): allowed, no event, no hit.
pub fn the_loader_s_own_opens_never_fire(tier: TierChoice, arm: ArmFn, block: bool) {
    let dir = world_dir();
    let path = dir.path().join("own");
    std::fs::write(&path, "x").expect("write");
    let (engine, rx) = engine(tier);
    let key = arm(&engine, &path, TrapValue { block, ..audit(5) });
    assert_eq!(std::fs::read(&path).expect("own read allowed"), b"x");
    assert!(events_for(&rx, key, quiet()).is_empty());
    assert_eq!(engine.kernel_stats().hits, 0);
}

/// A trapped file read (one event, given back), disarmed, read again: no
/// event; disarming twice is no error.
pub fn disarm_stops_events(tier: TierChoice, arm: ArmFn) -> (Trapped, RawEvent) {
    let t = trapped(tier, arm, "f", "x", 6);
    run(Command::new("cat").arg(&t.path));
    let evs = events_until(&t.rx, t.key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    t.engine.disarm(t.key).expect("disarm");
    assert!(t.engine.armed_keys().is_empty());
    run(Command::new("cat").arg(&t.path));
    assert!(
        events_for(&t.rx, t.key, quiet()).is_empty(),
        "disarmed key is silent"
    );
    t.engine
        .disarm(t.key)
        .expect("disarming twice is not an error");
    let ev = evs[0].clone();
    (t, ev)
}

/// uid and gid 65534 read a trapped file: one event naming them and the
/// reader's pid.
pub fn read_as_another_uid(tier: TierChoice, arm: ArmFn) {
    let t = trapped(tier, arm, "shared.txt", "x", 3);
    let (pid, out) = run(Command::new("cat").arg(&t.path).uid(65534).gid(65534));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events_until(&t.rx, t.key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!((evs[0].uid, evs[0].gid, evs[0].tgid), (65534, 65534, pid));
}

/// `sh` writes a trapped file, then appends to it: two events, masks
/// `MAY_OPEN|MAY_WRITE` then `MAY_OPEN|MAY_WRITE|MAY_APPEND`; gives them.
pub fn write_then_append(tier: TierChoice, arm: ArmFn) -> (Trapped, Vec<RawEvent>) {
    let t = trapped(tier, arm, "log", "", 2);
    for redirect in [">", ">>"] {
        run(Command::new("sh")
            .arg("-c")
            .arg(format!("echo x {redirect} {}", t.path.display())));
    }
    let evs = events_until(&t.rx, t.key, 2);
    let masks: Vec<u32> = evs.iter().map(|e| e.mask).collect();
    assert_eq!(masks, [0x20 | 0x2, 0x20 | 0x2 | 0x8], "write, then append");
    assert_eq!(evs[0].comm(), "sh");
    (t, evs)
}

/// A copy of `true` (named `trapped-true`, run as `true`) armed and
/// executed: one event, `MAY_OPEN|MAY_EXEC`, of the exec'ing process;
/// gives it with the binary's trap.
pub fn exec_of_a_trapped_binary(tier: TierChoice, arm: ArmFn) -> (Trapped, RawEvent) {
    let t = armed_as(tier, arm, "trapped-true", 4, |path| {
        copy_tool("/bin/true", path)
    });
    let (pid, out) = run(&mut tool_at(&t.path, "true"));
    assert!(out.status.success(), "{out:?}");
    let evs = events_until(&t.rx, t.key, 1);
    assert_eq!(
        evs.len(),
        1,
        "one event per exec (its open half is none): {evs:#?}"
    );
    assert_eq!(evs[0].mask, 0x20 | 0x1, "MAY_OPEN|MAY_EXEC");
    assert_eq!(evs[0].tgid, pid);
    let ev = evs[0].clone();
    (t, ev)
}

/// A trapped file replaced the way an atomic writer does (a new file
/// renamed over its path) while a hard link keeps the old inode: after a
/// rescan both inodes are armed.
pub struct Replaced {
    pub dir: tempfile::TempDir,
    pub rt: Runtime,
    /// The trapped path (now the new file).
    pub path: PathBuf,
    /// The old inode's remaining link.
    pub old_link: PathBuf,
    pub old_key: TrapKey,
    pub new_key: TrapKey,
}

/// Runs [`Replaced`]'s steps on the runtime `start` gives for the traps
/// `traps(path)` makes.
pub fn replaced_file(
    traps: impl FnOnce(&Path) -> Vec<Arc<CompiledTrap>>,
    start: impl FnOnce(&[Arc<CompiledTrap>]) -> Runtime,
) -> Replaced {
    let dir = world_dir();
    let path = dir.path().join("config");
    std::fs::write(&path, "v1").expect("write");
    let rt = start(&traps(&path));
    let old_key = key_of(&path);
    assert_eq!(rt.kernel_keys(), [old_key]);
    // an atomic writer: write a new file, rename it over the trapped path
    let new = dir.path().join(".config.tmp");
    std::fs::write(&new, "v2").expect("write");
    let old_link = dir.path().join("config.old");
    std::fs::hard_link(&path, &old_link).expect("keep the old inode reachable");
    run(Command::new("mv").arg(&new).arg(&path));
    rt.rescan_now();
    let new_key = key_of(&path);
    assert_ne!(old_key, new_key);
    let mut keys = rt.kernel_keys();
    keys.sort();
    let mut want = vec![old_key, new_key];
    want.sort();
    assert_eq!(
        keys, want,
        "the new file at the path is armed, the old inode still has a link: armed too"
    );
    Replaced {
        dir,
        rt,
        path,
        old_link,
        old_key,
        new_key,
    }
}
