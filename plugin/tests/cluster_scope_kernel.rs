//! Whom a policy from the API server reaches, on this machine's kernel: a
//! cluster policy's host traps only with the operator's consent; a
//! KubeArmorClusterPolicy's namespace selector (In, NotIn) and a
//! KubeArmorHostPolicy's `nodeSelector`; KubeArmor CRDs installed after kive
//! starts.

mod support;

use std::sync::atomic::Ordering;

use kive::node::Root;

use serde_json::json;
use support::apiserver::{cluster_source, kive_policy, pod_in, ApiServer, Kind};
use support::container::{key_in, layer_key, Container};
use support::runtime::node_runtime;
use support::{alerts_until, wait_until};

const NODE: &str = "node-a";

/// `host: true` from the cluster: rejected by default (not silently
/// "applied"), armed on the node when the operator allows it.
#[test]
fn cluster_host_traps_need_the_operator() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("host-secret.txt");
    std::fs::write(&file, "x").expect("write");
    let path = file.display().to_string();
    let api = ApiServer::start();
    api.apply(
        Kind::Policy,
        kive_policy("kivebpf-system", "node", &path, json!([{"host": true}])),
    );
    api.apply(
        Kind::Policy,
        kive_policy("tenant-a", "node", &path, json!([{"host": true}])),
    );

    // a callback to the cloud metadata service: the trap arms, its
    // callback is refused and reported on the policy when it is read
    api.apply(
        Kind::Policy,
        json!({"metadata": {"name": "hook", "namespace": "tenant-a"},
               "spec": {"traps": [{"path": "/hook.txt", "callback": "http://169.254.169.254/latest",
                                   "matchAny": [{}]}]}}),
    );

    let rt = node_runtime(NODE);
    let with_callback_rules = kive::policy::scope::ScopeConfig {
        callback_destinations: Some(Default::default()),
        ..Default::default()
    };
    let (off, _k) = cluster_source(&api, &rt, NODE, with_callback_rules);
    wait_until("a reconcile", || {
        off.status()
            .reconciles
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    });
    assert_eq!(
        rt.metrics().armed,
        0,
        "host traps from the cluster are off by default"
    );
    assert_eq!(
        off.status()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "both host entries are rejected"
    );
    wait_until("an Event on each policy", || api.events().len() == 3);
    let events = api.events();
    let (hook, host): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|e| e["regarding"]["name"] == "hook");
    assert_eq!(hook.len(), 1, "{events:#?}");
    assert_eq!(hook[0]["reason"], "CallbackRefused", "{:#}", hook[0]);
    let note = hook[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("policy tenant-a/hook trap 0 (/hook.txt): field callback: http://169.254.169.254/latest")
            && note.contains("cloud metadata"),
        "{note}"
    );
    let mut on_policies: Vec<(String, String)> = host
        .iter()
        .map(|e| {
            assert_eq!(e["reason"], "HostTrapRefused", "{e:#}");
            let note = e["note"].as_str().unwrap_or_default();
            assert!(note.contains("field matchAny[0].host"), "{note}");
            (
                e["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                e["regarding"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            )
        })
        .collect();
    on_policies.sort();
    assert_eq!(
        on_policies,
        [
            ("kivebpf-system".to_string(), "kivebpf-system".to_string()),
            ("tenant-a".to_string(), "tenant-a".to_string())
        ]
    );
    drop(off);
    drop(rt);

    // without the RBAC rule for Events, posting fails and arming does not care
    api.forbid_events(true);

    let rt = node_runtime(NODE);
    let scope = kive::policy::scope::ScopeConfig {
        allow_host_traps: true,
        ..Default::default()
    };
    let (on, _k) = cluster_source(&api, &rt, NODE, scope);
    wait_until("the cluster-wide host trap is armed", || {
        rt.metrics().armed == 1
    });
    let key = Root::open(std::path::Path::new("/"))
        .expect("host root")
        .resolve(&path)
        .expect("host file")
        .key;
    assert_eq!(rt.kernel_keys(), [key]);
    assert_eq!(
        on.status()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the tenant's host entry is still rejected"
    );
    wait_until("the forbidden Event post is counted", || {
        on.status().events.failed.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(api.events().len(), 3, "nothing new was stored");
    support::run(std::process::Command::new("cat").arg(&file));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].metadata.owner, "host");
    assert_eq!(got[0].policy_name, "node");
    // watched by change notification, as a policy file's host trap is
    // (where this filesystem takes marks: not Debian 6.1's tmpfs, whose
    // branch below passes without the watch too)
    rt.rescan_now();
    let m = rt.metrics();
    if support::rescan::marks_supported(dir.path()) {
        assert_eq!(
            (m.notify_watched, m.notify_unwatched),
            (1, 0),
            "the cluster's host trap is watched: {m:?}"
        );
    } else {
        assert_eq!(
            m.notify_unwatched, 1,
            "no marks here (kernel or filesystem): reported unwatched: {m:?}"
        );
    }
    // deleting the policy disarms it
    api.delete(Kind::Policy, "kivebpf-system", "node");
    wait_until("the host trap is disarmed", || rt.metrics().armed == 0);
}

fn ka_cluster_policy(name: &str, op: &str, namespaces: &[&str]) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "severity": 6,
            "selector": {"matchExpressions": [{"key": "namespace", "operator": op, "values": namespaces}]},
            "file": {"matchPaths": [{"path": "/etc/hostname"}]},
            "action": "Audit"
        }
    })
}

/// KubeArmor CRDs absent at start (not an error), installed later (picked
/// up); a KubeArmorClusterPolicy selects namespaces with In and NotIn.
#[test]
fn kubearmor_policies_from_the_api_server_once_their_crd_is_installed() {
    let web = Container::start(&[("etc/hostname", "web-0\n")], &[]);
    let tenant = Container::start(&[("etc/hostname", "job-0\n")], &[]);
    let api = ApiServer::start();
    api.apply(Kind::Pod, pod_in("default", "web-0", NODE, &web.id));
    api.apply(Kind::Pod, pod_in("tenant-a", "job-0", NODE, &tenant.id));
    let rt = node_runtime(NODE);
    let (cluster, _dir) = cluster_source(&api, &rt, NODE, Default::default());
    wait_until("a first reconcile without the KubeArmor CRDs", || {
        cluster.status().reconciles.load(Ordering::Relaxed) > 0
            && api.requests("KaClusterPolicy absent") >= 1
    });
    assert_eq!(
        cluster.status().watch_errors.load(Ordering::Relaxed),
        0,
        "an absent CRD is not a watch error"
    );
    assert_eq!(rt.metrics().armed, 0);

    // the CRD is installed, then a policy for every namespace but tenant-a
    api.install(Kind::KaClusterPolicy);
    api.apply(
        Kind::KaClusterPolicy,
        ka_cluster_policy("not-tenants", "NotIn", &["tenant-a"]),
    );
    wait_until("the installed CRD's policy is picked up", || {
        rt.metrics().armed == 1
    });
    let mut got = rt.kernel_keys();
    got.sort();
    let mut want = vec![
        key_in(&web, "/etc/hostname"),
        layer_key(&web, "/etc/hostname"),
    ];
    want.sort();
    assert_eq!(got, want, "NotIn tenant-a: web-0's file and its layer file");
    web.exec("cat /etc/hostname");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].policy_name, "not-tenants");
    assert_eq!(got[0].policy_severity, Some(6));
    assert_eq!(got[0].pod.name, "web-0");

    // In: only the namespaces listed
    api.apply(
        Kind::KaClusterPolicy,
        ka_cluster_policy("tenants", "In", &["tenant-a"]),
    );
    wait_until("the In policy is armed", || rt.metrics().armed == 2);
    let mut want = vec![
        key_in(&web, "/etc/hostname"),
        layer_key(&web, "/etc/hostname"),
        key_in(&tenant, "/etc/hostname"),
        layer_key(&tenant, "/etc/hostname"),
    ];
    want.sort();
    let mut got = rt.kernel_keys();
    got.sort();
    assert_eq!(got, want);
    api.delete(Kind::KaClusterPolicy, "", "not-tenants");
    wait_until("the deleted policy is disarmed", || rt.metrics().armed == 1);
    let mut got = rt.kernel_keys();
    got.sort();
    let mut want = vec![
        key_in(&tenant, "/etc/hostname"),
        layer_key(&tenant, "/etc/hostname"),
    ];
    want.sort();
    assert_eq!(got, want, "only tenant-a's file and its layer file");
}

fn node_with(labels: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": NODE, "labels": labels}})
}

/// A KubeArmorHostPolicy with a `nodeSelector` arms only while this node
/// carries the labels, and follows the node's labels as they change.
#[test]
fn a_host_policy_arms_only_on_the_nodes_its_node_selector_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("admin.conf");
    std::fs::write(&file, "secret").expect("write");
    let api = ApiServer::start();
    api.install(Kind::KaHostPolicy);
    api.apply(Kind::Node, node_with(json!({"kubernetes.io/os": "linux"})));
    api.apply(
        Kind::KaHostPolicy,
        json!({
            "metadata": {"name": "control-plane-pki"},
            "spec": {
                "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/control-plane": ""}},
                "file": {"matchPaths": [{"path": file.display().to_string()}]},
                "action": "Audit"
            }
        }),
    );
    let rt = node_runtime(NODE);
    let scope = kive::policy::scope::ScopeConfig {
        allow_host_traps: true,
        ..Default::default()
    };
    let (cluster, _k) = cluster_source(&api, &rt, NODE, scope);
    wait_until("reconciles after the node's labels are read", || {
        cluster.status().reconciles.load(Ordering::Relaxed) > 1 && api.requests("Node list") >= 1
    });
    assert_eq!(rt.metrics().armed, 0, "a worker node is not selected");

    api.apply(
        Kind::Node,
        node_with(
            json!({"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}),
        ),
    );
    wait_until("the labelled node arms the host policy", || {
        rt.metrics().armed == 1
    });
    assert_eq!(rt.kernel_keys(), vec![support::key_of(&file)]);
    let status = std::process::Command::new("cat")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat runs");
    assert!(status.success());
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].policy_name, "control-plane-pki");
    assert_eq!(got[0].metadata.path, file.display().to_string());

    api.apply(Kind::Node, node_with(json!({"kubernetes.io/os": "linux"})));
    wait_until("the label removed disarms it", || rt.metrics().armed == 0);
}
