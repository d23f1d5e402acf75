//! Fault drill: a container whose processes exit while kive resolves its
//! traps. The window is made deterministic, not timed: the trap's path
//! runs through a FUSE filesystem (bound into the container as a hostPath
//! volume) whose lookup is held until the test has killed the container.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kive::runtime::{ContainerOwner, DesiredEntry, Runtime, RuntimeConfig};
use kive::trap::TierChoice;
use support::container::Container;
use support::fuse::HangingMount;
use support::logs::Logs;
use support::{alerts_until, key_of, world_dir};

fn owner(c: &Container, pod: &str) -> ContainerOwner {
    ContainerOwner {
        pod: pod.into(),
        namespace: "default".into(),
        pod_uid: format!("uid-{pod}"),
        container: "app".into(),
        container_id: format!("containerd://{}", c.id),
        ..Default::default()
    }
}

/// Container `a` exits while kive resolves its trap (held in the lookup):
/// the file found in the dead container is not armed, the entry goes back
/// to pending with a WARN naming the trap and the container, container
/// `b` is armed and alerts, and kive keeps reconciling.
#[test]
fn a_container_exiting_during_resolution_goes_back_to_pending_the_others_stay_armed() {
    support::ensure_mounts();
    let d = world_dir();
    let fuse = HangingMount::mount(&d.path().join("fuse"));
    let mut a = Container::start_with(&[], &[], &[(fuse.path(), "/data")]);
    let b = Container::start(&[("/secret.txt", "b's secret\n")], &[]);
    let cfg = RuntimeConfig {
        // the reconcile waits through the held lookup (no stall)
        resolve_deadline: Duration::from_secs(3600),
        ..support::runtime::config(TierChoice::Tracepoint)
    };
    let (rt, _) = Runtime::start(&cfg, &[]).unwrap_or_else(|e| panic!("runtime: {e}"));
    let compiled = kive::policy::load_str(
        "drill",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: exits, namespace: kive-system}\nspec:\n  traps:\n  - path: /data/hang/secret\n    allowSharedFile: true\n    matchAny: [{namespace: default}]\n  - path: /secret.txt\n    matchAny: [{namespace: default}]\n",
    );
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let desired = vec![
        DesiredEntry {
            trap: Arc::clone(&compiled.traps[0]),
            owner: owner(&a, "a-0").into(),
            host: false,
        },
        DesiredEntry {
            trap: Arc::clone(&compiled.traps[1]),
            owner: owner(&b, "b-0").into(),
            host: false,
        },
    ];
    let pods = rt.pod_controller();
    let wanted = desired.clone();
    let reconcile = std::thread::spawn(move || {
        let logs = Logs::capture(tracing::Level::WARN);
        let report = pods.reconcile(&wanted);
        (report, logs.lines())
    });
    // a's trap is being resolved: held in the lookup of /data/hang
    fuse.wait_held(1);
    a.kill();
    // the lookup returns a file, in a container that is gone
    fuse.release_as_files();
    let (report, lines) = reconcile.join().expect("the reconcile returns");

    let in_dead = key_of(&fuse.path().join("hang/secret"));
    assert!(
        !rt.kernel_keys().contains(&in_dead),
        "the dead container's file is not armed"
    );
    assert_eq!(rt.armed_for_container(&a.id), 0);
    assert_eq!(report.armed, 1, "b is armed: {report:?}");
    assert!(
        report.pending.len() == 1
            && report.pending[0].contains("exited while its trap was resolved")
            && report.pending[0].contains(&a.id),
        "a's entry is pending with the reason: {report:?}"
    );
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("exited while its trap was resolved"))
        .collect();
    assert_eq!(warned.len(), 1, "logged once: {lines:#?}");
    let m = rt.metrics();
    assert_eq!((m.armed, m.pending), (1, 1), "{m:?}");

    // b alerts
    b.exec("cat /secret.txt");
    let got = alerts_until(&rt, 1);
    assert!(
        got.iter()
            .any(|al| al.pod.container.id == format!("containerd://{}", b.id)),
        "b's alert: {got:#?}"
    );
    // kive keeps reconciling: a stays pending (its container is gone), b armed
    let again = rt.pod_controller().reconcile(&desired);
    assert_eq!(again.armed, 1, "{again:?}");
    assert_eq!(again.pending.len(), 1, "{again:?}");
    assert_eq!(rt.armed_for_container(&b.id), 1);
}
