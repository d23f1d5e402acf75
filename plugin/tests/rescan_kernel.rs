//! The rescan in proportion to what changed (real eBPF, tracepoint tier):
//! an entry whose file did not change is looked at and not resolved again
//! (counted), while every change a full re-resolution saw is still seen
//! once the rescan remembers the entry: a file replaced, a link added, a
//! directory above swapped, a file mounted over, an overlay copy-up; and a
//! container whose process starts after its traps were planned is found
//! through its cgroup's `cgroup.procs`. Every change is caught by change
//! notification itself: the safety net's full pass is hours away
//! (`rescan_full`), none runs (`rescan_full_passes` stays 0), and the
//! entry is counted as named by a notification (`rescan_notified`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kive::runtime::{ContainerOwner, DesiredEntry, Metrics, Runtime};
use kive::trap::TierChoice;
use support::container::{layer_key, Container};
use support::rescan::{bind_mount, kernel_at_least, marks_supported, LateContainer};
use support::runtime::{config, host_traps, start};
use support::{alerts_until, key_of, run, sorted, world_dir};

/// The safety net's full pass: never within a test.
const HOURS: Duration = Duration::from_secs(6 * 3600);

fn host_runtime(paths: &[&Path]) -> Runtime {
    let traps: Vec<(&Path, &str)> = paths.iter().map(|p| (*p, "")).collect();
    let mut cfg = config(TierChoice::Tracepoint);
    cfg.rescan_full = HOURS;
    start(&cfg, &host_traps("rescan", &traps))
}

/// The pass after a change: caught through notification, not by a full
/// pass; `before` is the figures of before the change.
/// Where no mark can be placed (see [`marks_supported`]), the entries are
/// reported unwatched and the change is seen by the look every pass
/// gives them (each test's own assertions).
fn notified(rt: &Runtime, before: &Metrics, what: &str) -> Metrics {
    rt.rescan_now();
    let m = rt.metrics();
    assert_eq!(m.rescan_full_passes, 0, "{what}: no full pass: {m:?}");
    if before.notify_unwatched == 0 {
        assert!(
            m.rescan_notified > before.rescan_notified,
            "{what}: the entry was named by a notification: {m:?}"
        );
        assert_eq!(m.notify_unwatched, 0, "{what}: every entry watched: {m:?}");
    }
    m
}

/// A rescan after which every entry of host paths in `dir` is remembered
/// (the first pass after arming resolves each in full) and watched where
/// this kernel and filesystem take marks.
fn remembered(rt: &Runtime, dir: &Path) -> Metrics {
    rt.rescan_now();
    let m = rt.metrics();
    if marks_supported(dir) {
        assert_eq!(
            (m.notify_watched, m.notify_unwatched),
            (m.armed, 0),
            "every entry watched: {m:?}"
        );
    } else {
        assert_eq!(
            m.notify_unwatched, m.armed,
            "no marks here (kernel or filesystem): every entry reported unwatched: {m:?}"
        );
    }
    m
}

#[test]
fn nothing_changed_nothing_is_resolved_again() {
    let d = world_dir();
    let files: Vec<_> = (0..3).map(|i| d.path().join(format!("f{i}"))).collect();
    for f in &files {
        std::fs::write(f, "x").expect("write");
    }
    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let rt = host_runtime(&paths);
    let first = remembered(&rt, d.path());
    assert_eq!(
        (first.rescan_resolved, first.rescan_unchanged),
        (3, 0),
        "the first pass resolves every entry in full: {first:?}"
    );
    // where no mark can be placed, every pass looks at every entry
    let watched = first.notify_unwatched == 0;
    let looks = if watched { 0 } else { 3 };
    if watched {
        // "/", each directory down to the files', then the files
        let dirs = d.path().components().count();
        assert_eq!(
            first.notify_marks,
            dirs + 3,
            "every directory of the paths, marked once, and the files: {first:?}"
        );
        assert!(first.notify_mount_watches >= 1, "{first:?}");
    }
    let keys = sorted(rt.kernel_keys());
    rt.rescan_now();
    rt.rescan_now();
    let m = rt.metrics();
    assert_eq!(
        (m.rescan_resolved, m.rescan_unchanged, m.rescan_notified),
        (3, 2 * looks, 0),
        "two passes with no notification look at nothing: {m:?}"
    );
    assert_eq!(m.rearms, 0);
    assert_eq!(sorted(rt.kernel_keys()), keys, "the same keys stay armed");
    // a change to one file: only its entry is looked at and resolved again
    std::fs::write(&files[1], "changed").expect("write");
    let m = notified(&rt, &m, "a file written");
    assert_eq!(
        (m.rescan_resolved, m.rescan_unchanged, m.rescan_notified),
        if watched { (4, 0, 1) } else { (4, 8, 0) },
        "one entry changed, one resolved (unwatched: the two others looked at too): {m:?}"
    );
    // the safety net looks at every entry: nothing changed since
    let unchanged = m.rescan_unchanged;
    rt.rescan_full_now();
    let m = rt.metrics();
    assert_eq!(
        (m.rescan_resolved, m.rescan_unchanged, m.rescan_full_passes),
        (4, unchanged + 3, 1),
        "the full pass looked at all three, resolved none: {m:?}"
    );
}

#[test]
fn a_notification_queue_overflow_falls_back_to_a_full_pass() {
    let d = world_dir();
    let f = d.path().join("f");
    std::fs::write(&f, "x").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    // more names created and deleted in the watched directory than the
    // queue holds (16,384 events; a create and delete of one name merge)
    for i in 0..20_000 {
        let p = d.path().join(format!("n{i}"));
        std::fs::write(&p, "").expect("write");
        std::fs::remove_file(&p).expect("remove");
    }
    rt.rescan_now();
    let m = rt.metrics();
    if before.notify_unwatched > 0 {
        // no mark here: no queue filled, the entry looked at every pass
        assert_eq!(
            (m.notify_overflows, m.rescan_unchanged),
            (0, before.rescan_unchanged + 1),
            "{m:?}"
        );
        return;
    }
    assert_eq!(m.notify_overflows, 1, "the overflow is counted: {m:?}");
    assert_eq!(
        m.rescan_full_passes, 1,
        "it is followed by a full pass: {m:?}"
    );
    assert_eq!(
        m.rescan_unchanged,
        before.rescan_unchanged + 1,
        "which looked at the entry: {m:?}"
    );
    // once read, the queue is quiet again
    rt.rescan_now();
    let after = rt.metrics();
    assert_eq!(
        (after.rescan_full_passes, after.rescan_unchanged),
        (1, m.rescan_unchanged),
        "{after:?}"
    );
}

#[test]
fn a_file_replaced_after_it_was_remembered_is_re_armed_and_reported() {
    let d = world_dir();
    let f = d.path().join("config");
    std::fs::write(&f, "v1").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    let old = key_of(&f);
    let new = d.path().join(".config.tmp");
    std::fs::write(&new, "v2").expect("write");
    run(Command::new("mv").arg(&new).arg(&f));
    notified(&rt, &before, "file replaced");
    let now = key_of(&f);
    assert_ne!(old, now);
    assert_eq!(
        rt.kernel_keys(),
        [now],
        "the new file is armed, the old let go"
    );
    assert_eq!(rt.metrics().rearms, 1);
    let got = alerts_until(&rt, 1);
    let t = got[0].metadata.tamper.as_ref().expect("a tamper alert");
    assert_eq!(t.kind, "replace", "{got:#?}");
}

#[test]
fn a_link_added_after_it_was_remembered_is_reported() {
    let d = world_dir();
    let f = d.path().join("secret");
    std::fs::write(&f, "s").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    run(Command::new("ln").arg(&f).arg(d.path().join("x")));
    notified(&rt, &before, "link added");
    let got = alerts_until(&rt, 1);
    assert_eq!(
        got.iter()
            .map(|a| a.metadata.tamper.as_ref().map(|t| t.kind.clone()))
            .collect::<Vec<_>>(),
        [Some("link".to_string())],
        "{got:#?}"
    );
}

#[test]
fn a_directory_swapped_above_a_remembered_file_is_followed() {
    let d = world_dir();
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let f = sub.join("f");
    std::fs::write(&f, "one").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    let old = key_of(&f);
    // the directory moves away; a new one with a new file takes its name
    std::fs::rename(&sub, d.path().join("sub.old")).expect("rename");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(&f, "two").expect("write");
    notified(&rt, &before, "directory swapped above");
    let now = key_of(&f);
    assert_ne!(old, now);
    assert!(
        rt.kernel_keys().contains(&now),
        "the file now at the path is armed: {:?}",
        rt.kernel_keys()
    );
    assert_eq!(rt.metrics().rearms, 1);
}

#[test]
fn a_path_through_a_symlink_is_not_watched_and_its_swap_is_still_followed() {
    let d = world_dir();
    for dir in ["real", "real2"] {
        std::fs::create_dir(d.path().join(dir)).expect("mkdir");
        std::fs::write(d.path().join(dir).join("f"), dir).expect("write");
    }
    let link = d.path().join("link");
    std::os::unix::fs::symlink("real", &link).expect("symlink");
    let f = link.join("f");
    let rt = host_runtime(&[&f]);
    rt.rescan_now();
    let before = rt.metrics();
    // renaming a directory above the link's target is no change of a name
    // on the trap's path: such an entry is looked at every pass instead
    assert_eq!(
        (before.notify_watched, before.notify_unwatched),
        (0, 1),
        "{before:?}"
    );
    let tmp = d.path().join("link.new");
    std::os::unix::fs::symlink("real2", &tmp).expect("symlink");
    std::fs::rename(&tmp, &link).expect("swap the link");
    rt.rescan_now();
    let now = key_of(&f);
    assert_eq!(now, key_of(&d.path().join("real2/f")));
    assert!(
        rt.kernel_keys().contains(&now),
        "the file the path leads to now is armed: {:?}",
        rt.kernel_keys()
    );
    assert_eq!(rt.metrics().rescan_full_passes, 0);
}

#[test]
fn a_file_mounted_over_a_remembered_file_is_armed() {
    let d = world_dir();
    let f = d.path().join("f");
    let other = d.path().join("other");
    std::fs::write(&f, "mine").expect("write");
    std::fs::write(&other, "theirs").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    let _bind = bind_mount(&other, &f);
    notified(&rt, &before, "file mounted over");
    let seen = key_of(&f);
    assert_eq!(seen, key_of(&other), "the mount hides the file");
    assert!(
        rt.kernel_keys().contains(&seen),
        "what the path leads to now is armed: {:?}",
        rt.kernel_keys()
    );
}

#[test]
fn a_mount_elsewhere_names_nothing_and_a_directory_mounted_above_is_followed() {
    let d = world_dir();
    let sub = d.path().join("sub");
    let elsewhere = d.path().join("elsewhere");
    let other = d.path().join("other");
    for dir in [&sub, &elsewhere, &other] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    let f = sub.join("f");
    std::fs::write(&f, "mine").expect("write");
    std::fs::write(other.join("f"), "theirs").expect("write");
    let rt = host_runtime(&[&f]);
    let before = remembered(&rt, d.path());
    let _elsewhere = bind_mount(&other, &elsewhere);
    rt.rescan_now();
    let m = rt.metrics();
    // (an entry that cannot be watched is looked at every pass)
    let looks = u64::from(before.notify_unwatched > 0);
    assert_eq!(
        (m.rescan_notified, m.rescan_unchanged, m.rescan_resolved),
        (
            before.rescan_notified,
            before.rescan_unchanged + looks,
            before.rescan_resolved
        ),
        "a mount on no armed path names no entry: {m:?}"
    );
    let _above = bind_mount(&other, &sub);
    notified(&rt, &m, "directory mounted above");
    let seen = key_of(&f);
    assert_eq!(seen, key_of(&other.join("f")), "the mount hides the file");
    assert!(
        rt.kernel_keys().contains(&seen),
        "what the path leads to now is armed: {:?}",
        rt.kernel_keys()
    );
}

#[test]
fn an_overlay_copy_up_after_the_rescan_remembered_the_file_moves_the_backing() {
    let c = Container::start(&[("/secret.txt", "image secret\n")], &[]);
    let rt = support::runtime::node_runtime("node-a");
    let compiled = kive::policy::load_str(
        "pod-test",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: decoys, namespace: kive-system}\nspec:\n  traps:\n  - path: /secret.txt\n    matchAny: [{namespace: default}]\n",
    );
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let desired: Vec<DesiredEntry> = compiled
        .traps
        .iter()
        .map(|t| DesiredEntry {
            trap: t.clone(),
            owner: owner(&c.id, "uid-web-0").into(),
            host: false,
        })
        .collect();
    let report = rt.pod_controller().reconcile(&desired);
    assert_eq!(report.armed, 1, "{report:?}");
    let lower = layer_key(&c, "/secret.txt");
    assert!(rt.kernel_keys().contains(&lower), "the lower copy backs it");
    rt.rescan_now();
    rt.rescan_full_now();
    let before = rt.metrics();
    assert_eq!(before.rescan_unchanged, 1, "remembered, unchanged");
    assert_eq!(before.rescan_full_passes, 1, "{before:?}");
    c.exec("echo more >> /secret.txt");
    rt.rescan_now();
    let m = rt.metrics();
    assert_eq!(m.rescan_full_passes, 1, "no full pass since: {m:?}");
    if kernel_at_least(6, 6) {
        assert!(
            m.rescan_notified > before.rescan_notified && m.notify_unwatched == 0,
            "the copy-up was notified: {m:?}"
        );
    } else {
        // overlayfs takes marks with file handles from Linux 6.6: the entry
        // is reported unwatched and looked at every pass
        assert_eq!(m.notify_unwatched, 1, "{m:?}");
        assert!(m.rescan_resolved > before.rescan_resolved, "{m:?}");
    }
    assert!(c.upper().join("secret.txt").exists(), "copied up");
    let upper = layer_key(&c, "/secret.txt");
    assert_ne!(upper, lower);
    assert!(
        rt.kernel_keys().contains(&upper),
        "the upper copy backs it now: {:?}",
        rt.kernel_keys()
    );
}

fn owner(id: &str, uid: &str) -> ContainerOwner {
    ContainerOwner {
        pod: "web-0".into(),
        namespace: "default".into(),
        pod_uid: uid.into(),
        container: "app".into(),
        container_id: format!("containerd://{id}"),
        ..Default::default()
    }
}

#[test]
fn a_process_started_in_a_container_after_arming_is_found_through_cgroup_procs() {
    let d = world_dir();
    let f = d.path().join("decoy");
    std::fs::write(&f, "x").expect("write");
    let id = format!("{:032x}{:032x}", 0x1a7e_u64, std::process::id());
    let mut late = LateContainer::new(&id);
    let rt = support::runtime::node_runtime("node-a");
    // the container shares the node's root: the trap says the file may be shared
    let compiled = kive::policy::load_str(
        "pod-test",
        &format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: late, namespace: kive-system}}\nspec:\n  traps:\n  - path: {}\n    allowSharedFile: true\n    matchAny: [{{namespace: default}}]\n",
            f.display()
        ),
    );
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let desired = vec![DesiredEntry {
        trap: compiled.traps[0].clone(),
        owner: owner(&id, &format!("late-{}", std::process::id())).into(),
        host: false,
    }];
    let report = rt.pod_controller().reconcile(&desired);
    assert_eq!(report.armed, 0, "no process yet: {report:?}");
    assert_eq!(report.pending.len(), 1, "{report:?}");
    rt.rescan_now();
    assert_eq!(rt.armed_for_container(&id), 0, "still no process");
    assert_eq!(rt.metrics().rescan_roots_found, 0);

    late.start_process();
    rt.rescan_now();
    assert_eq!(
        rt.armed_for_container(&id),
        1,
        "armed at the next rescan, without a reconcile: {:?}",
        rt.metrics()
    );
    assert_eq!(rt.metrics().rescan_roots_found, 1);
    assert_eq!(rt.kernel_keys(), [key_of(&f)]);
}
