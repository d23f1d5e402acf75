//! Attacks that try to redirect a trap through a symlink at its path's last
//! component, on this machine's kernel (tracepoint tier). A link there is
//! never followed, even one root planted in root's own directory; only the
//! kubelet's atomic-writer layout is, inside its own directory (the swap
//! across versions is `runtime_kernel.rs::an_atomic_writer_symlink_swap_is_followed`).
//! Each refusal keeps the trap pending with policy, trap and path in the
//! reason, and arms nothing.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kive::policy::{load_str, CompiledTrap};
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::TierChoice;
use support::{alerts, alerts_until, key_of, quiet, run, world_dir};

fn host_policy(path: &Path, extra: &str) -> Vec<Arc<CompiledTrap>> {
    let text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: redirect, namespace: test}}\nspec:\n  traps:\n  - path: {}\n    matchAny: [{{host: true}}]\n{extra}",
        path.display()
    );
    let c = load_str("redirect-test", &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    c.traps
}

fn config() -> RuntimeConfig {
    support::runtime::config(TierChoice::Tracepoint)
}

/// Starts kive on a trap at `path` that must be refused: nothing armed,
/// the trap pending, the reason naming policy, trap, path and the link;
/// a read of `target` (where the link leads) gives no alert.
fn assert_refused(path: &Path, extra: &str, target: &Path) {
    support::ensure_mounts();
    let (rt, report) =
        Runtime::start(&config(), &host_policy(path, extra)).expect("the runtime starts");
    assert_eq!(report.armed, 0, "{report:?}");
    let [why] = report.failures.as_slice() else {
        panic!("one refusal expected: {report:?}");
    };
    assert!(
        why.contains("policy test/redirect trap 0")
            && why.contains(&path.display().to_string())
            && why.contains("symlink"),
        "the reason names policy, trap, path and the link: {why}"
    );
    assert!(
        rt.kernel_keys().is_empty(),
        "nothing armed: {:?}",
        rt.kernel_keys()
    );
    assert_eq!(rt.metrics().pending, 1, "the trap stays pending");
    rt.rescan_now();
    assert!(rt.kernel_keys().is_empty(), "still nothing after a rescan");
    run(Command::new("cat").arg(target));
    let got = alerts(&rt, quiet());
    assert!(got.is_empty(), "the link's target is not trapped: {got:#?}");
}

#[test]
fn a_root_planted_symlink_to_a_node_file_is_never_followed() {
    // root's own directory (0755), root's own link: the rule used to trust it
    let d = world_dir();
    let decoy = d.path().join("decoy");
    symlink("/etc/hostname", &decoy).expect("symlink");
    assert_refused(&decoy, "", Path::new("/etc/hostname"));
    assert_refused(&decoy, "    create: true\n", Path::new("/etc/hostname"));
    assert!(
        std::fs::symlink_metadata(&decoy)
            .expect("lstat")
            .file_type()
            .is_symlink(),
        "the link is left as it was (no decoy created through it)"
    );
}

#[test]
fn a_fake_atomic_writer_data_link_out_of_the_directory_is_refused() {
    // token -> ..data/token as the kubelet writes it, but ..data leads out
    let outside = world_dir();
    let node_file = outside.path().join("token");
    std::fs::write(&node_file, "node").expect("write");
    let d = world_dir();
    symlink("..data/token", d.path().join("token")).expect("symlink");
    // ..data straight to another directory
    symlink(outside.path(), d.path().join("..data")).expect("symlink");
    assert_refused(&d.path().join("token"), "", &node_file);
    // ..data to a ..version of the same directory that is itself a link out
    std::fs::remove_file(d.path().join("..data")).expect("rm");
    symlink(outside.path(), d.path().join("..v1")).expect("symlink");
    symlink("..v1", d.path().join("..data")).expect("symlink");
    assert_refused(&d.path().join("token"), "", &node_file);
}

#[test]
fn the_real_atomic_writer_layout_is_armed_and_alerts() {
    let d = world_dir();
    let v1 = d.path().join("..2026_12_01_10_00_00.000000001");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(v1.join("token"), "secret").expect("write");
    symlink(v1.file_name().expect("name"), d.path().join("..data")).expect("symlink");
    symlink("..data/token", d.path().join("token")).expect("symlink");
    support::ensure_mounts();
    let traps = host_policy(&d.path().join("token"), "");
    let (rt, report) = Runtime::start(&config(), &traps).expect("the runtime starts");
    assert!(report.failures.is_empty(), "{report:?}");
    let key = key_of(&v1.join("token"));
    assert_eq!(rt.kernel_keys(), [key], "the versioned file is armed");
    let (pid, _) = run(Command::new("cat").arg(d.path().join("token")));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].metadata.inode, got[0].process.tgid), (key.ino, pid));
}
