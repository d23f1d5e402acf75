//! Fault drill: the API server dies mid-watch and comes back with its
//! history compacted (410 Gone → re-list). What is armed stays armed and
//! keeps alerting through the outage, the periodic pod reconcile does not
//! disarm anything from a view it cannot refresh, the watch errors are
//! counted, and what changed while it was down is applied once it is back.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use kive::node::Root;
use kive::trap::TrapKey;
use serde_json::json;
use support::apiserver::{cluster_source, pod, policy, ApiServer, Kind};
use support::container::{key_in, layer_key, Container};
use support::runtime::node_runtime;
use support::{alerts_until, wait_until};

const NODE: &str = "node-a";

#[test]
fn api_server_outage_keeps_traps_armed_and_catches_up_after_410() {
    support::ensure_mounts();
    let a = Container::start(&[], &[]);
    let b = Container::start(&[], &[]);
    let mut api = ApiServer::start();
    api.apply(
        Kind::Namespace,
        json!({"metadata": {"name": "default", "labels": {}}}),
    );
    api.apply(Kind::Pod, pod("web-0", NODE, &a.id));
    api.apply(Kind::Pod, pod("web-1", NODE, &b.id));
    api.apply(Kind::Policy, policy("decoys", "/secret.txt"));
    let rt = node_runtime(NODE);
    let (cluster, _dir) = cluster_source(&api, &rt, NODE, Default::default());
    wait_until("both pods' decoys armed", || rt.metrics().armed == 2);
    let before: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
    assert_eq!(
        before,
        BTreeSet::from([
            key_in(&a, "/secret.txt"),
            layer_key(&a, "/secret.txt"),
            key_in(&b, "/secret.txt"),
            layer_key(&b, "/secret.txt"),
        ]),
        "each decoy and its layer file"
    );

    // the API server dies mid-watch
    let status = cluster.status();
    let errors = status.watch_errors.load(Ordering::Relaxed);
    api.stop();
    wait_until("the watchers saw the API server go", || {
        status.watch_errors.load(Ordering::Relaxed) > errors
    });
    // reconciles go on without it: none disarms what it cannot re-check
    let reconciles = status.reconciles.load(Ordering::Relaxed);
    wait_until("two more reconciles during the outage", || {
        status.reconciles.load(Ordering::Relaxed) >= reconciles + 2
    });
    assert_eq!(
        rt.kernel_keys().into_iter().collect::<BTreeSet<_>>(),
        before
    );
    assert_eq!(rt.metrics().armed, 2, "nothing armed is lost");
    b.exec("cat /secret.txt; true");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "traps fire during the outage: {got:#?}");
    assert_eq!(got[0].pod.name, "web-1");

    // meanwhile the cluster changes, and its history is compacted
    api.delete(Kind::Pod, "default", "web-1");
    api.apply(Kind::Policy, policy("more", "/other.txt"));
    api.compact();
    let lists = (api.requests("Pod list"), api.requests("Policy list"));
    api.restart();

    // 410 Gone: both watchers re-list and catch up
    wait_until("both watchers re-listed", || {
        api.requests("Pod list") > lists.0 && api.requests("Policy list") > lists.1
    });
    wait_until("web-1 disarmed, the new policy armed on web-0", || {
        let keys: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
        Root::open(a.root())
            .ok()
            .and_then(|r| r.resolve("/other.txt").ok())
            .is_some_and(|o| {
                keys == BTreeSet::from([
                    key_in(&a, "/secret.txt"),
                    layer_key(&a, "/secret.txt"),
                    o.key,
                    layer_key(&a, "/other.txt"),
                ])
            })
    });
    assert!(
        status.watch_errors.load(Ordering::Relaxed) > errors,
        "the outage is counted"
    );
    a.exec("cat /other.txt; true");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].policy_name, "more");
    assert_eq!(got[0].pod.name, "web-0");
}
