//! A pod's change costs that pod: the cluster source hands the runtime the
//! changed pod's wanted entries and the controller touches only those (the
//! count of entries a reconcile looked at, not timing: speed goals are in
//! `cargo bench --bench reconcile`).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use support::apiserver::{cluster_source_every, pod, ApiServer, Kind};
use support::container::Container;
use support::runtime::node_runtime;
use support::wait_until;

const NODE: &str = "node-a";

fn two_traps() -> serde_json::Value {
    let trap = |path: &str| {
        json!({"path": path, "create": true, "mode": 0o400,
               "matchAny": [{"namespace": "default", "matchLabels": {"app": "web"}}]})
    };
    json!({
        "metadata": {"name": "decoys", "namespace": "kivebpf-system"},
        "spec": {"traps": [trap("/secret.txt"), trap("/other.txt")]}
    })
}

/// The namespace of the test's pods, with the label the policy's scope reads.
fn web_namespace(api: &ApiServer) {
    api.apply(
        Kind::Namespace,
        json!({"metadata": {"name": "default", "labels": {"team": "web"}}}),
    );
}

/// A cluster source whose resync is an hour away: every reconcile in the
/// test is a change's (or a retry's), never the periodic one.
fn hourly_source(
    api: &ApiServer,
    rt: &kive::runtime::Runtime,
) -> (kive::k8s::ClusterSource, tempfile::TempDir) {
    cluster_source_every(api, rt, NODE, Default::default(), Duration::from_secs(3600))
}

#[test]
fn a_pod_change_rearms_only_that_pod() {
    support::ensure_mounts();
    let a = Container::start(&[], &[]);
    let b = Container::start(&[], &[]);
    let c = Container::start(&[], &[]);
    // web-1's next container, already running when kive starts (found by
    // the locator's first walk of the cgroup tree)
    let b2 = Container::start(&[], &[]);
    let api = ApiServer::start();
    web_namespace(&api);
    for (name, ct) in [("web-0", &a), ("web-1", &b), ("web-2", &c)] {
        api.apply(Kind::Pod, pod(name, NODE, &ct.id));
    }
    api.apply(Kind::Policy, two_traps());
    let rt = node_runtime(NODE);
    // no resync during the test: every reconcile is a change's
    let (cluster, _dir) = hourly_source(&api, &rt);
    let status = cluster.status();
    wait_until("3 pods x 2 traps armed", || {
        status.armed.load(Ordering::Relaxed) == 6
    });
    let keys_a = {
        let mut k = rt.kernel_keys();
        k.sort();
        k
    };

    // web-1's container restarts: a new container id in the same pod
    let before = status.reconciles.load(Ordering::Relaxed);
    api.apply(Kind::Pod, pod("web-1", NODE, &b2.id));
    // the status follows the arming: wait for both (in the Debian 6.1 guest
    // the entries were read armed before the reconcile was counted)
    wait_until("web-1's new container armed, its old one let go", || {
        rt.armed_for_container(&b2.id) == 2
            && rt.armed_for_container(&b.id) == 0
            && status.reconciles.load(Ordering::Relaxed) > before
    });
    assert_eq!(
        status.touched.load(Ordering::Relaxed),
        4,
        "the restart's reconcile looked at web-1's 2 old and 2 new entries only (a full one: 12)"
    );
    assert_eq!(rt.armed_for_container(&a.id), 2, "web-0 untouched");
    assert_eq!(rt.armed_for_container(&c.id), 2, "web-2 untouched");
    assert_eq!(status.armed.load(Ordering::Relaxed), 6);
    assert_eq!(status.pending.load(Ordering::Relaxed), 0);

    // web-2 is deleted: its 2 entries go, the others stay
    let before = status.reconciles.load(Ordering::Relaxed);
    api.delete(Kind::Pod, "default", "web-2");
    wait_until("web-2's entries removed", || {
        rt.armed_for_container(&c.id) == 0 && status.reconciles.load(Ordering::Relaxed) > before
    });
    assert_eq!(
        status.touched.load(Ordering::Relaxed),
        2,
        "web-2's 2 entries"
    );
    assert_eq!(status.armed.load(Ordering::Relaxed), 4);
    assert_eq!(rt.metrics().armed, 4);
    assert_eq!(rt.armed_for_container(&a.id), 2);
    assert_eq!(rt.armed_for_container(&b2.id), 2);
    // web-0's keys were never rewritten away: still in the kernel
    let now = rt.kernel_keys();
    let a_keys: Vec<_> = keys_a.iter().filter(|k| now.contains(k)).collect();
    assert!(
        a_keys.len() >= 2,
        "web-0's armed keys are still in the kernel: {keys_a:?} vs {now:?}"
    );

    // a policy change is a full reconcile (every entry looked at)
    let before = status.reconciles.load(Ordering::Relaxed);
    let mut one = two_traps();
    one["spec"]["traps"]
        .as_array_mut()
        .expect("traps")
        .truncate(1);
    api.apply(Kind::Policy, one);
    wait_until("the second trap removed from both pods", || {
        status.reconciles.load(Ordering::Relaxed) > before
            && status.armed.load(Ordering::Relaxed) == 2
    });
    assert_eq!(
        status.touched.load(Ordering::Relaxed),
        6,
        "a full reconcile: 4 existing and 2 wanted entries"
    );
}

#[test]
fn a_container_found_late_is_armed_without_waiting_for_a_resync() {
    support::ensure_mounts();
    let a = Container::start(&[], &[]);
    let api = ApiServer::start();
    web_namespace(&api);
    api.apply(Kind::Pod, pod("web-0", NODE, &a.id));
    api.apply(Kind::Policy, two_traps());
    let rt = node_runtime(NODE);
    let (cluster, _dir) = hourly_source(&api, &rt);
    let status = cluster.status();
    wait_until("web-0 armed", || rt.armed_for_container(&a.id) == 2);
    // a container started after the locator walked the cgroup tree: not
    // found by its first reconcile (the walk runs at most once a second),
    // retried soon by the source (the resync is an hour away)
    let b = Container::start(&[], &[]);
    api.apply(Kind::Pod, pod("web-1", NODE, &b.id));
    // armed by the source's retry or by the rescan (which finds a root for a
    // pending container entry through cgroup.procs), whichever comes first;
    // the source's status then follows with its next reconcile of the pod
    wait_until("web-1's container armed and nothing pending", || {
        rt.armed_for_container(&b.id) == 2 && status.pending.load(Ordering::Relaxed) == 0
    });
    assert_eq!(rt.armed_for_container(&a.id), 2);
}
