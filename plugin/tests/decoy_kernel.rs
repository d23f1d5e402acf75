//! Decoys (`create: true`) against the real kernel: created with their mode
//! and silent while kive makes them, never written over an existing file,
//! never redirected by a planted symlink, recreated when deleted, and still
//! a tripwire when renamed (the rename reported, a fresh decoy at the path).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kive::policy::CompiledTrap;
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::TierChoice;
use support::{alerts, alerts_until, key_of, quiet, run, sorted, world_dir};

fn host_policy(path: &Path, extra: &str) -> Vec<Arc<CompiledTrap>> {
    support::runtime::host_traps("rt", &[(path, extra)])
}

fn config() -> RuntimeConfig {
    support::runtime::config(TierChoice::Tracepoint)
}

fn start(traps: &[Arc<CompiledTrap>]) -> Runtime {
    support::runtime::start(&config(), traps)
}

#[test]
fn a_decoy_is_created_with_its_mode_without_alerting_on_itself() {
    let d = world_dir();
    let f = d.path().join("decoy.txt");
    let traps = host_policy(
        &f,
        "    create: true\n    mode: 0640\n    metadata: {severity: high}\n",
    );
    let rt = start(&traps);
    let md = std::fs::metadata(&f).expect("decoy exists");
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(md.len(), 0);
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "creating and resolving the decoy is silent"
    );
    assert_eq!(rt.metrics().kernel.hits, 0);

    let (pid, _) = run(Command::new("cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let a = &got[0];
    assert_eq!(a.alert_version, "v1");
    assert_eq!(a.policy_name, "rt");
    assert_eq!(a.metadata.path, f.display().to_string());
    assert_eq!(a.metadata.inode, md.ino());
    assert_eq!(a.metadata.mask, 36);
    assert_eq!(a.metadata.owner, "host");
    assert_eq!(
        a.metadata.kernel_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .expect("boot id")
            .trim()
    );
    assert_eq!(
        a.custom_metadata.get("severity").map(String::as_str),
        Some("high")
    );
    assert_eq!(a.process.tgid, pid);
    assert_eq!(a.process.comm, "cat");
    assert_eq!(a.node.name, "test-node");
    let age = a.timestamp_ns().abs_diff(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64,
    );
    assert!(
        age < 5_000_000_000,
        "timestamp is the access time: {}",
        a.timestamp
    );
}

#[test]
fn an_existing_file_is_never_truncated_or_rewritten() {
    let d = world_dir();
    let f = d.path().join("existing.txt");
    std::fs::write(&f, "precious").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let _rt = start(&host_policy(&f, "    create: true\n    mode: 0444\n"));
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "precious");
    assert_eq!(
        std::fs::metadata(&f).expect("stat").permissions().mode() & 0o7777,
        0o600
    );
}

#[test]
fn a_renamed_decoy_stays_armed_its_path_gets_a_fresh_decoy_and_the_rename_is_reported() {
    let d = world_dir();
    let f = d.path().join("secret.txt");
    let moved = d.path().join("moved.txt");
    let rt = start(&host_policy(&f, "    create: true\n    mode: 0444\n"));
    let first = key_of(&f);
    let (mover, _) = run(Command::new("mv").arg(&f).arg(&moved));
    rt.rescan_now();
    assert!(f.exists(), "a fresh decoy at the trap's path");
    let second = key_of(&f);
    assert_ne!(first, second);
    assert_eq!(sorted(rt.kernel_keys()), sorted(vec![first, second]));

    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let t = got[0].metadata.tamper.as_ref().expect("a tamper alert");
    assert_eq!(t.kind, "rename");
    assert_eq!(t.old_path, f.display().to_string());
    assert_eq!(t.new_path, moved.display().to_string());
    assert_eq!(got[0].metadata.inode, first.ino);
    assert_eq!(got[0].metadata.hook, "rescan");
    assert_eq!(got[0].policy_name, "rt");
    assert_ne!(got[0].process.tgid, mover, "the rescan does not know who");

    let (pid, out) = run(Command::new("cat").arg(&moved));
    assert!(out.status.success());
    let got = alerts_until(&rt, 1);
    assert_eq!(
        got.len(),
        1,
        "the moved decoy is still a tripwire: {got:#?}"
    );
    assert_eq!(got[0].metadata.inode, first.ino);
    assert_eq!(got[0].process.tgid, pid);
    assert_eq!(got[0].metadata.armed_as, f.display().to_string());
    assert_eq!(got[0].metadata.trap_path, f.display().to_string());

    std::fs::remove_file(&moved).expect("rm");
    rt.rescan_now();
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0].metadata.tamper.as_ref().map(|t| t.kind.as_str()),
        Some("unlink")
    );
    assert_eq!(rt.kernel_keys(), [second], "no link left: let go");
}

#[test]
fn a_symlink_planted_by_a_user_never_redirects_a_create_trap() {
    use std::os::unix::fs::{lchown, symlink};
    let d = world_dir();
    let node_file = d.path().join("hostname");
    std::fs::write(&node_file, "node\n").expect("write");
    let public = d.path().join("pub");
    std::fs::create_dir(&public).expect("mkdir");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let decoy = public.join("decoy");
    symlink(&node_file, &decoy).expect("symlink");
    lchown(&decoy, Some(65534), Some(65534)).expect("the link is nobody's");
    support::ensure_mounts();
    let traps = host_policy(&decoy, "    create: true\n");
    let (rt, report) = Runtime::start(&config(), &traps).expect("runtime");
    assert_eq!(report.armed, 0, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let why = &report.failures[0];
    assert!(
        why.contains("policy test/rt trap 0")
            && why.contains(&decoy.display().to_string())
            && why.contains("symlink"),
        "the reason names policy, trap, path: {why}"
    );
    assert!(rt.kernel_keys().is_empty(), "nothing armed");
    assert_eq!(rt.metrics().pending, 1, "the trap stays pending");
    run(Command::new("cat").arg(&node_file));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "the node file is not trapped"
    );
    assert_eq!(
        std::fs::read_to_string(&node_file).expect("read"),
        "node\n",
        "untouched"
    );
}

#[test]
fn a_deleted_decoy_is_recreated_and_re_armed() {
    let d = world_dir();
    let f = d.path().join("decoy");
    let rt = start(&host_policy(&f, "    create: true\n    mode: 0444\n"));
    let first = key_of(&f);
    run(Command::new("rm").arg("-f").arg(&f));
    rt.rescan_now();
    assert!(f.exists(), "recreated");
    let second = key_of(&f);
    assert_eq!(rt.kernel_keys(), [second]);
    assert_ne!(first, second);
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0].metadata.tamper.as_ref().map(|t| t.kind.as_str()),
        Some("unlink"),
        "the deletion is reported"
    );
    assert_eq!(got[0].metadata.inode, first.ino);
    run(Command::new("cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].metadata.inode, second.ino);
}
