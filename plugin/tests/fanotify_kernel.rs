//! The fanotify tier on this machine's kernel: permission events on inode
//! marks, answered by the engine's reader. The same checks as the eBPF
//! tiers' kernel tests (engine_kernel, runtime_kernel), forced to
//! `fanotify`, plus what only this tier does: block by `FAN_DENY`, slow a
//! flooder instead of losing events.

mod support;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kive::policy::{load_str, CompiledTrap};
use kive::runtime::Runtime;
use kive::trap::{Action, Engine, Hook, Tier, TierChoice, TrapError, TrapKey, TrapValue};
use support::exec::{cat_as, copy_tool, tool_at};
use support::scenarios;
use support::{
    alerts, alerts_until, engine, events_for, events_until, key_of, quiet, run, world_dir,
};

fn value(id: u32, block: bool) -> TrapValue {
    TrapValue {
        trap_id: id,
        block,
        conditions: 0,
    }
}

fn pin(path: &Path) -> OwnedFd {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("O_PATH {}: {e}", path.display()))
}

/// Arms a file the way the runtime does (through an `O_PATH` pin).
fn arm(e: &Engine, path: &Path, v: TrapValue) -> TrapKey {
    let key = key_of(path);
    let p = pin(path);
    e.arm_file(p.as_fd(), key, v)
        .unwrap_or_else(|err| panic!("arming {}: {err}", path.display()));
    key
}

#[test]
fn the_tier_loads_forced_and_has_no_programs() {
    let (e, _rx) = engine(TierChoice::Fanotify);
    assert_eq!(e.tier(), Tier::Fanotify);
    assert!(e.programs().is_empty());
    assert!(Tier::Fanotify.can_block());
}

#[test]
fn a_bare_key_cannot_be_armed_without_its_file() {
    let (e, _rx) = engine(TierChoice::Fanotify);
    let key = TrapKey { dev: 1, ino: 2 };
    match e.arm(key, value(1, false)) {
        Err(TrapError::NeedsFile { key: k }) => assert_eq!(k, key),
        other => panic!("expected NeedsFile, got {other:?}"),
    }
    assert!(e.armed_keys().is_empty());
}

#[test]
fn cat_of_a_trapped_file_gives_exactly_one_event() {
    let (t, ev, pid) = scenarios::cat_of_a_trapped_file(TierChoice::Fanotify, arm);
    assert_eq!(ev.hook, Hook::FanotifyPerm);
    let cat = std::fs::canonicalize("/bin/cat").expect("cat");
    assert_eq!(ev.exe(), cat.display().to_string());
    assert_eq!(ev.cwd(), t.dir.path().display().to_string());
    assert_eq!(ev.args(), ["cat".to_string(), t.path.display().to_string()]);
    assert_eq!(ev.ns_pid, pid, "host pid namespace");
    assert_eq!(t.engine.kernel_stats().hits, 1);
}

#[test]
fn an_untrapped_file_gives_no_event() {
    scenarios::an_untrapped_file_gives_no_event(TierChoice::Fanotify, arm);
}

#[test]
fn a_write_gives_a_write_mask_and_an_append_an_append_mask() {
    let (t, evs) = scenarios::write_then_append(TierChoice::Fanotify, arm);
    assert_eq!(evs[1].flags & 0o2000, 0o2000, "O_APPEND in the flags");
    assert_eq!(std::fs::read_to_string(&t.path).expect("read"), "x\nx\n");
}

#[test]
fn access_as_another_uid_reports_that_uid() {
    scenarios::read_as_another_uid(TierChoice::Fanotify, arm);
}

#[test]
fn exec_of_a_trapped_binary_is_one_event_with_may_exec() {
    let (t, ev) = scenarios::exec_of_a_trapped_binary(TierChoice::Fanotify, arm);
    assert_eq!(ev.hook, Hook::FanotifyPerm);
    // the process waits before exec's point of no return: still the parent's image
    let me = std::env::current_exe().expect("test binary");
    assert_eq!(ev.exe(), me.display().to_string());
    // a later plain read of the same binary is an open again
    run(Command::new("cat").arg(&t.path));
    let evs = events_until(&t.rx, t.key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].mask, 0x20 | 0x4);
}

#[test]
fn a_block_trap_denies_the_open_with_eperm() {
    let d = world_dir();
    let f = d.path().join("blocked.txt");
    std::fs::write(&f, "no").expect("write");
    let (e, rx) = engine(TierChoice::Fanotify);
    let key = arm(&e, &f, value(8, true));
    let (pid, out) = run(Command::new("cat").arg(&f));
    assert!(!out.status.success(), "cat must fail");
    assert!(out.stdout.is_empty(), "nothing read");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation not permitted"), "EPERM: {err}");
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!((evs[0].action, evs[0].tgid), (Action::Block, pid));
    assert_eq!(e.kernel_stats().blocked, 1);
    // the exec of a blocked binary fails too
    let bin = d.path().join("blocked-true");
    copy_tool("/bin/true", &bin);
    arm(&e, &bin, value(9, true));
    let spawned = tool_at(&bin, "true").status();
    assert!(
        matches!(&spawned, Err(err) if err.raw_os_error() == Some(libc::EPERM)),
        "exec denied with EPERM: {spawned:?}"
    );
}

#[test]
fn the_loader_s_own_opens_never_fire() {
    scenarios::the_loader_s_own_opens_never_fire(TierChoice::Fanotify, arm, true);
}

#[test]
fn disarm_stops_events_and_stopping_the_reader_never_stalls_an_open() {
    let (t, _) = scenarios::disarm_stops_events(TierChoice::Fanotify, arm);
    let (mut e, rx, f, key) = (t.engine, t.rx, t.path, t.key);
    // armed, reader stopped: the mark is flushed, the open goes through
    arm(&e, &f, value(6, true));
    e.stop_reader();
    let (_, out) = run(Command::new("cat").arg(&f));
    assert!(out.status.success(), "no reader, no mark, no block");
    assert!(events_for(&rx, key, quiet()).is_empty());
}

#[test]
fn a_flood_is_slowed_and_nothing_is_lost() {
    let d = world_dir();
    let f = d.path().join("flooded");
    std::fs::write(&f, "x").expect("write");
    let (e, rx) = engine(TierChoice::Fanotify);
    let key = arm(&e, &f, value(10, false));
    const N: usize = 2000;
    let script = format!(
        "i=0; while [ $i -lt {N} ]; do : < {}; i=$((i+1)); done",
        f.display()
    );
    let (pid, out) = run(Command::new("sh").arg("-c").arg(script));
    assert!(out.status.success());
    let mut evs = events_for(&rx, key, Duration::from_millis(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while evs.len() < N && std::time::Instant::now() < deadline {
        evs.extend(events_for(&rx, key, Duration::from_millis(200)));
    }
    assert_eq!(evs.len(), N, "every open of the flood is one event");
    assert!(evs.iter().all(|ev| ev.tgid == pid));
    let s = e.kernel_stats();
    assert_eq!((s.hits, s.drops), (N as u64, 0));
}

fn host_policy(path: &Path, extra: &str) -> Vec<Arc<CompiledTrap>> {
    support::runtime::host_traps("fan", &[(path, extra)])
}

fn start(traps: &[Arc<CompiledTrap>]) -> Runtime {
    support::ensure_mounts();
    let cfg = support::runtime::config(TierChoice::Fanotify);
    let (rt, report) = Runtime::start(&cfg, traps).unwrap_or_else(|e| panic!("runtime: {e}"));
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.warnings.iter().all(|w| !w.contains("not enforced")),
        "{:?}",
        report.warnings
    );
    assert_eq!(rt.tier(), Tier::Fanotify);
    rt
}

#[test]
fn runtime_a_decoy_alerts_with_process_details_and_its_own_creation_is_silent() {
    let d = world_dir();
    let f = d.path().join("decoy.txt");
    let rt = start(&host_policy(&f, "    create: true\n    mode: 0640\n"));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "creating the decoy is silent"
    );
    let (pid, _) = run(Command::new("cat").arg(&f).current_dir(d.path()));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let a = &got[0];
    assert_eq!(a.metadata.path, f.display().to_string());
    assert_eq!(a.metadata.mask, 36);
    assert_eq!(a.process.tgid, pid);
    assert_eq!(a.process.comm, "cat");
    assert_eq!(a.process.arguments, format!("cat {}", f.display()));
    assert_eq!(a.process.cwd, d.path().display().to_string());
}

#[test]
fn runtime_a_replaced_file_is_re_armed_and_the_old_inode_stays_marked_while_linked() {
    let r = scenarios::replaced_file(|f| host_policy(f, ""), start);
    let (reader, _) = run(Command::new("cat").arg(&r.path));
    let got = alerts_until(&r.rt, 1);
    let at_path = got
        .iter()
        .find(|a| a.process.tgid == reader)
        .unwrap_or_else(|| panic!("the file now at the path alerts: {got:#?}"));
    assert_eq!(at_path.metadata.inode, r.new_key.ino);
}

#[test]
fn runtime_a_block_trap_is_enforced() {
    let d = world_dir();
    let f = d.path().join("vault");
    std::fs::write(&f, "gold").expect("write");
    let rt = start(&host_policy(&f, "    action: block\n"));
    let (_, out) = run(Command::new("cat").arg(&f));
    assert!(!out.status.success(), "denied");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(rt.metrics().kernel.blocked, 1);
}

/// A KubeArmor host policy (rule conditions) for the runtime on this tier.
fn kubearmor(spec: &str) -> Vec<Arc<CompiledTrap>> {
    let text = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata: {{name: ka-fan}}\nspec:\n{spec}"
    );
    let c = load_str("fanotify-kubearmor", &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(!c.traps.is_empty(), "no trap in {text}");
    c.traps
}

const MAY_WRITE: i32 = 2;
const MAY_APPEND: i32 = 8;

/// readOnly + Block, decided by the reader from the open's mode: a read
/// passes silently, an append is refused before it writes anything.
#[test]
fn runtime_kubearmor_read_only_passes_reads_and_refuses_writes() {
    let d = world_dir();
    let f = d.path().join("settings");
    std::fs::write(&f, "v1\n").expect("write");
    let rt = start(&kubearmor(&format!(
        "  action: Block\n  file:\n    matchPaths:\n    - path: {}\n      readOnly: true\n",
        f.display()
    )));
    let (_, out) = run(Command::new("cat").arg(&f));
    assert!(out.status.success(), "a read passes: {out:?}");
    assert_eq!(out.stdout, b"v1\n");
    assert!(
        alerts(&rt, support::quiet()).is_empty(),
        "a read of a readOnly file is silent"
    );
    assert_eq!(rt.metrics().kernel.hits, 0, "nothing reported");

    let (pid, out) = run(Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>>{}; echo v2 >&3", f.display())));
    assert!(!out.status.success(), "the append is refused: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "EPERM: {out:?}"
    );
    assert_eq!(std::fs::read(&f).expect("read"), b"v1\n", "nothing written");
    let got = support::alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].process.tgid, pid);
    assert_eq!(got[0].metadata.action, "block");
    assert_eq!(
        got[0].metadata.mask & (MAY_WRITE | MAY_APPEND),
        MAY_WRITE | MAY_APPEND,
        "an append: {}",
        got[0].metadata.mask
    );
    assert_eq!(rt.metrics().kernel.blocked, 1);
}

/// ownerOnly + Block: the owner (by fsuid) passes silently; root, who is
/// not the owner, is refused.
#[test]
fn runtime_kubearmor_owner_only_passes_the_owner_and_refuses_others() {
    let d = world_dir();
    let f = d.path().join("owned");
    std::fs::write(&f, "mine\n").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::chown(&f, Some(4321), Some(4321)).expect("chown");
    let rt = start(&kubearmor(&format!(
        "  action: Block\n  file:\n    matchPaths:\n    - path: {}\n      ownerOnly: true\n",
        f.display()
    )));
    let (_, out) = run(&mut cat_as(4321, &f));
    assert!(out.status.success(), "the owner reads: {out:?}");
    assert!(
        alerts(&rt, support::quiet()).is_empty(),
        "the owner's read is silent"
    );
    let (pid, out) = run(Command::new("cat").arg(&f));
    assert!(!out.status.success(), "root is not the owner: {out:?}");
    let got = support::alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].process.tgid, got[0].process.uid), (pid, 0));
    assert_eq!(got[0].metadata.action, "block");
}

/// Allow + fromSource: only the listed executable, known by the inode of
/// `/proc/<tid>/exe`, opens the file; a hard link to it is the same source,
/// another binary renamed to its name is not.
#[test]
fn runtime_kubearmor_from_source_allow_is_the_executables_inode() {
    let d = world_dir();
    let f = d.path().join("secret");
    std::fs::write(&f, "s\n").expect("write");
    let allowed = d.path().join("reader");
    copy_tool("/usr/bin/cat", &allowed);
    let rt = start(&kubearmor(&format!(
        "  action: Allow\n  file:\n    matchPaths:\n    - path: {}\n      fromSource: [{{path: {}}}]\n",
        f.display(),
        allowed.display()
    )));
    let (_, out) = run(tool_at(&allowed, "cat").arg(&f));
    assert!(out.status.success(), "the source reads: {out:?}");
    let alias = d.path().join("another-name");
    std::fs::hard_link(&allowed, &alias).expect("link");
    let (_, out) = run(tool_at(&alias, "cat").arg(&f));
    assert!(
        out.status.success(),
        "the source under another name: {out:?}"
    );
    assert!(
        alerts(&rt, support::quiet()).is_empty(),
        "the allowed inode reads silently, under either name"
    );

    let (cat, out) = run(Command::new("/usr/bin/cat").arg(&f));
    assert!(!out.status.success(), "another executable is refused");
    let impostor = d.path().join("impostor");
    copy_tool("/usr/bin/head", &impostor);
    std::fs::rename(&impostor, &allowed).expect("rename over the allowed name");
    let (fake, out) = run(tool_at(&allowed, "head").arg(&f));
    assert!(
        !out.status.success(),
        "a binary renamed to the allowed name is refused: {out:?}"
    );
    let got = support::alerts_until(&rt, 2);
    let pids: Vec<u32> = got.iter().map(|a| a.process.tgid).collect();
    assert_eq!(pids, [cat, fake], "{got:#?}");
    assert!(got.iter().all(|a| a.metadata.action == "block"), "{got:#?}");
}

/// A process rule (Block): reading the binary passes silently, executing
/// it is refused (one alert for the exec, none for the exec's own open).
#[test]
fn runtime_kubearmor_process_rule_refuses_the_exec_not_a_read() {
    let d = world_dir();
    let tool = d.path().join("tool");
    copy_tool("/usr/bin/true", &tool);
    let rt = start(&kubearmor(&format!(
        "  action: Block\n  process:\n    matchPaths:\n    - path: {}\n",
        tool.display()
    )));
    let (_, out) = run(Command::new("cat").arg(&tool));
    assert!(out.status.success(), "reading the binary passes");
    assert!(
        alerts(&rt, support::quiet()).is_empty(),
        "a read of a process rule's file is silent"
    );
    let err = tool_at(&tool, "true")
        .status()
        .expect_err("the exec is refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let got = support::alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "one alert for the exec: {got:#?}");
    assert_eq!(got[0].metadata.action, "block");
    assert_ne!(
        got[0].metadata.mask & 1,
        0,
        "MAY_EXEC: {}",
        got[0].metadata.mask
    );
}
