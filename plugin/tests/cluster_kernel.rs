//! End to end on this machine's kernel: the test API server serves
//! KivePolicies and pods whose containers are emulated containers; the real
//! kube client watches them; kive arms the traps per container.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use kive::k8s::{ClusterConfig, ClusterSource};
use kive::node::Root;
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::{TierChoice, TrapKey};
use serde_json::json;
use support::apiserver::{ApiServer, Kind};
use support::container::Container;
use support::{alerts, alerts_until, quiet, wait_until};

const NODE: &str = "node-a";

fn pod(name: &str, node: &str, container_id: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"app": "web", "pod-template-hash": "5f7c9d"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "name": "web-5f7c9d", "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "web-sa",
                 "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                   "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "",
                     "containerID": format!("containerd://{container_id}"), "ready": true,
                     "restartCount": 0, "state": {"running": {"startedAt": "2026-11-22T00:00:00Z"}}}]}
    })
}

fn policy(name: &str, path: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "kive-system"},
        "spec": {"alertVersion": "v1", "traps": [{
            "path": path, "create": true, "mode": 0o400,
            "metadata": {"severity": "high"},
            "matchAny": [{"namespace": "default", "matchLabels": {"app": "web"}}]
        }]}
    })
}

fn key_in(c: &Container, path: &str) -> TrapKey {
    Root::open(c.root())
        .expect("container root")
        .resolve(path)
        .unwrap_or_else(|e| panic!("{path} in container: {e}"))
        .key
}

/// The key of a file of a container's upper layer, seen from the node.
fn upper_key(c: &Container, name: &str) -> TrapKey {
    support::key_of(&c.upper().join(name))
}

#[test]
fn pod_traps_follow_policies_pods_and_containers() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    support::ensure_mounts();
    let a = Container::start(&[], &[]);
    let b = Container::start(&[], &[]);
    let mut api = ApiServer::start();
    api.apply(
        Kind::Namespace,
        json!({"metadata": {"name": "default", "labels": {"team": "payments"}}}),
    );
    api.apply(Kind::Pod, pod("web-0", NODE, &a.id));
    api.apply(Kind::Pod, pod("web-1", "node-b", &b.id));
    api.apply(Kind::Policy, policy("decoys", "/secret.txt"));

    let cfg = RuntimeConfig {
        node_name: NODE.into(),
        rescan: Duration::from_secs(3600),
        engine: kive::trap::EngineConfig {
            tier: TierChoice::Tracepoint,
            ..Default::default()
        },
        ..Default::default()
    };
    let (rt, _) = Runtime::start(&cfg, &[]).expect("runtime");

    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let cluster = ClusterSource::start(
        ClusterConfig {
            kubeconfig: Some(kubeconfig),
            node_name: NODE.into(),
            resync: Duration::from_millis(200),
        },
        rt.pod_controller(),
    )
    .expect("cluster source");

    // the policy arms on web-0 only (web-1 runs on node-b)
    wait_until("the decoy in web-0 is armed", || rt.metrics().armed == 1);
    let ka = key_in(&a, "/secret.txt");
    let mut want = vec![ka, upper_key(&a, "secret.txt")];
    want.sort();
    let mut armed = rt.kernel_keys();
    armed.sort();
    assert_eq!(armed, want, "the overlay file and its upper-layer copy");
    assert!(
        Root::open(b.root())
            .expect("b")
            .resolve("/secret.txt")
            .is_err(),
        "nothing is created in the pod of another node"
    );
    assert!(api.requests("Pod list") >= 1 && api.requests("Pod watch") >= 1);

    // `; true` keeps the container's shell alive as cat's parent
    a.exec("cat /secret.txt; true");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let al = &got[0];
    assert_eq!(al.policy_name, "decoys");
    assert_eq!(al.policy_namespace.as_deref(), Some("kive-system"));
    assert_eq!(al.pod.name, "web-0");
    assert_eq!(al.pod.namespace, "default");
    assert_eq!(al.pod.ip, "10.1.0.7");
    assert_eq!(al.pod.container.name, "app");
    assert_eq!(al.pod.container.id, format!("containerd://{}", a.id));
    assert_eq!(al.metadata.owner, "pod");
    assert_eq!(al.metadata.path, "/secret.txt");
    assert_eq!(al.node.name, NODE);
    assert_eq!(al.process.comm, "cat");
    // captured in the kernel, as the container sees it
    assert_eq!(al.process.binary, "/usr/bin/cat");
    assert_eq!(al.process.arguments, "cat /secret.txt");
    assert_eq!(al.process.cwd, "/");
    let sh = std::fs::canonicalize("/usr/bin/sh").expect("sh");
    assert_eq!(
        al.process.parent_binary,
        sh.display().to_string(),
        "the parent shell, as the container sees it"
    );
    assert_ne!(
        al.process.ns_pid,
        Some(al.process.tgid),
        "pid inside the container"
    );
    let acc = al.accessor.as_ref().expect("accessor");
    assert!(!acc.host);
    assert_eq!(acc.container_id, format!("containerd://{}", a.id));
    assert_eq!(
        (acc.pod_name.as_str(), acc.container_name.as_str()),
        ("web-0", "app")
    );
    assert_eq!(al.pod.uid, "uid-web-0");
    assert_eq!(
        al.pod.namespace_labels.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(al.pod.service_account, "web-sa");
    assert_eq!(al.pod.container.image, "web:1");
    let w = al.pod.workload.as_ref().expect("workload");
    assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "web"));

    // the host reads the container's file: the owner stays web-0, the accessor is the host
    support::run(std::process::Command::new("cat").arg(a.root().join("secret.txt")));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].pod.name, "web-0");
    assert!(
        got[0].accessor.as_ref().expect("accessor").host,
        "{:?}",
        got[0].accessor
    );

    // a process of another container (web-1's cgroup) reaches web-0's file
    a.exec_from(&b.cgroup, "cat /secret.txt");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].pod.name, "web-0", "the owner");
    let acc = got[0].accessor.as_ref().expect("accessor");
    assert!(!acc.host);
    assert_eq!(
        acc.container_id,
        format!("containerd://{}", b.id),
        "the accessor"
    );

    // a container of another pod on this node, with no trap of its own
    // (kive knows no pod for it): a container accessor, foreign by the pod
    // uid its cgroup path names
    let other_id = format!("{:016x}", std::process::id()).repeat(4);
    let other_pod = "9b8c7d6e_aaaa_bbbb_cccc_ddddeeeeffff";
    let other_cg = a
        .cgroup
        .parent()
        .expect("the test slice")
        .join(format!("kubepods-besteffort-pod{other_pod}.slice"))
        .join(format!("cri-containerd-{other_id}.scope"));
    std::fs::create_dir_all(&other_cg).expect("the other pod's cgroup");
    a.exec_from(&other_cg, "cat /secret.txt");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let acc = got[0].accessor.as_ref().expect("an accessor, not unknown");
    assert!(!acc.host, "a container, never the host: {acc:?}");
    assert_eq!(acc.container_id, format!("containerd://{other_id}"));
    assert_eq!(acc.pod_name, "", "kive arms nothing in it");
    let mut payload = Vec::new();
    kive::falco::payload::encode(&got[0], &mut payload).expect("encodes");
    let d = kive::falco::Decoded::decode(&payload).expect("decodes");
    assert_eq!(
        kive::falco::fields::foreign(&payload, &d),
        Some(true),
        "kive.accessor.foreign is true: the CRITICAL outside-its-owner rule fires"
    );
    wait_until("the other pod's cgroup empties", || {
        std::fs::remove_dir(&other_cg).is_ok()
    });
    let _ = std::fs::remove_dir(other_cg.parent().expect("pod slice"));

    // the container restarts: a new container id, the trap follows it
    let a2 = Container::start(&[], &[]);
    api.apply(Kind::Pod, pod("web-0", NODE, &a2.id));
    wait_until("the restarted container is armed", || {
        let now = Root::open(a2.root())
            .ok()
            .and_then(|r| r.resolve("/secret.txt").ok());
        now.is_some_and(|p| {
            let mut want = vec![p.key, upper_key(&a2, "secret.txt")];
            want.sort();
            let mut armed = rt.kernel_keys();
            armed.sort();
            armed == want
        })
    });
    drop(a);
    a2.exec("cat /secret.txt");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].pod.container.id, format!("containerd://{}", a2.id));

    // the API server goes away: what is armed stays armed
    let errors = cluster.status().watch_errors.load(Ordering::Relaxed);
    api.stop();
    wait_until("the watchers saw the API server go", || {
        cluster.status().watch_errors.load(Ordering::Relaxed) > errors
    });
    a2.exec("cat /secret.txt");
    assert_eq!(
        alerts_until(&rt, 1).len(),
        1,
        "traps fire while the API server is down"
    );
    assert_eq!(rt.metrics().armed, 1);

    // it comes back with history compacted (410 Gone → re-list) and a new policy
    api.compact();
    api.restart();
    api.apply(Kind::Policy, policy("more", "/other.txt"));
    wait_until("the new policy is armed", || rt.metrics().armed == 2);
    // 410 Gone made both watchers re-list (each after its own backoff)
    wait_until("both watchers re-listed after 410 Gone", || {
        api.requests("Policy list") >= 2 && api.requests("Pod list") >= 2
    });
    a2.exec("cat /other.txt");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].policy_name, "more");

    // deleting a policy disarms exactly its traps
    api.delete(Kind::Policy, "kive-system", "decoys");
    wait_until("the deleted policy is disarmed", || rt.metrics().armed == 1);
    a2.exec("cat /secret.txt");
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "a deleted policy's trap is silent"
    );

    // deleting the pod disarms the rest
    api.delete(Kind::Pod, "default", "web-0");
    wait_until("the deleted pod is disarmed", || rt.metrics().armed == 0);
    assert!(rt.kernel_keys().is_empty());
    assert!(
        cluster
            .status()
            .reconciles
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}
