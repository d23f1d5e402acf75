//! End to end on this machine's kernel: the test API server serves
//! KivePolicies and pods whose containers are emulated containers; the real
//! kube client watches them; kive arms the traps per container.

mod support;

use std::sync::atomic::Ordering;

use kive::node::Root;

use kive::trap::TrapKey;
use serde_json::json;
use support::apiserver::{cluster_source, kive_policy, pod, pod_in, policy, ApiServer, Kind};
use support::container::{key_in, layer_key, Container};
use support::runtime::node_runtime;
use support::{alerts, alerts_until, quiet, wait_until};

const NODE: &str = "node-a";

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

    let rt = node_runtime(NODE);
    let (cluster, _dir) = cluster_source(&api, &rt, NODE, Default::default());

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
    assert!(
        api.requests("Pod list") >= 1,
        "the pods were listed before arming"
    );
    // the watch opens after the list, on its own task: wait for it, never race it
    wait_until("the pod watch is open", || api.requests("Pod watch") >= 1);

    // `; true` keeps the container's shell alive as cat's parent
    a.exec("cat /secret.txt; true");
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    let al = &got[0];
    assert_eq!(al.policy_name, "decoys");
    assert_eq!(al.policy_namespace.as_deref(), Some("kivebpf-system"));
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
    assert_eq!(al.process.binary, a.real_path("/usr/bin/cat"));
    assert_eq!(al.process.arguments, "cat /secret.txt");
    assert_eq!(al.process.cwd, "/");
    assert_eq!(
        al.process.parent_binary,
        a.real_path("/usr/bin/sh"),
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
    api.delete(Kind::Policy, "kivebpf-system", "decoys");
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

/// The scenario: a policy in tenant-a can neither plant a decoy in
/// default/web-0 (`matchAny: [{}]`) nor arm its files (`namespace:
/// default`); it still acts in its own namespace, and a policy of the
/// cluster-wide namespace still reaches every namespace.
#[test]
fn a_tenant_policy_stays_in_its_namespace() {
    let web = Container::start(&[("etc/hostname", "web-0\n")], &[]);
    let tenant = Container::start(&[], &[]);
    let mut api = ApiServer::start();
    api.apply(Kind::Pod, pod_in("default", "web-0", NODE, &web.id));
    api.apply(Kind::Pod, pod_in("tenant-a", "job-0", NODE, &tenant.id));
    api.apply(
        Kind::Policy,
        kive_policy("tenant-a", "everything", "/planted.txt", json!([{}])),
    );
    api.apply(
        Kind::Policy,
        json!({"metadata": {"name": "neighbour", "namespace": "tenant-a"},
               "spec": {"traps": [{"path": "/etc/hostname", "matchAny": [{"namespace": "default"}]}]}}),
    );
    api.apply(
        Kind::Policy,
        kive_policy(
            "kivebpf-system",
            "wide",
            "/wide.txt",
            json!([{"namespace": "default"}]),
        ),
    );
    let rt = node_runtime(NODE);
    let (cluster, _dir) = cluster_source(&api, &rt, NODE, Default::default());

    // every policy is in the first reconcile (it waits for the first list)
    wait_until("the in-scope traps are armed", || rt.metrics().armed == 2);
    let mut want = vec![
        key_in(&web, "/wide.txt"),
        layer_key(&web, "/wide.txt"),
        key_in(&tenant, "/planted.txt"),
        layer_key(&tenant, "/planted.txt"),
    ];
    want.sort();
    let mut got = rt.kernel_keys();
    got.sort();
    assert_eq!(
        got, want,
        "only the wide trap in web-0 and tenant-a's own decoy"
    );
    assert!(
        Root::open(web.root())
            .expect("web root")
            .resolve("/planted.txt")
            .is_err(),
        "a tenant-a policy planted a file in default/web-0"
    );
    assert!(
        !rt.kernel_keys().contains(&key_in(&web, "/etc/hostname")),
        "a tenant-a policy armed default/web-0's /etc/hostname"
    );
    assert_eq!(
        cluster
            .status()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the out-of-scope entry is reported as rejected"
    );
    // the tenant's neighbour reads its own hostname: no alert reaches tenant-a
    web.exec("cat /etc/hostname");
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "no alert from default/web-0's hostname"
    );

    // the refusal is reported on the policy object, not only in the log
    wait_until("an Event on tenant-a/neighbour", || {
        !api.events().is_empty()
    });
    let events = api.events();
    assert_eq!(
        events.len(),
        1,
        "one Event, on the refused entry only: {events:#?}"
    );
    let ev = &events[0];
    assert_eq!(ev["metadata"]["namespace"], "tenant-a", "{ev:#}");
    assert_eq!(ev["regarding"]["kind"], "KivePolicy", "{ev:#}");
    assert_eq!(ev["regarding"]["apiVersion"], "kivebpf.san7o.github.io/v1");
    assert_eq!(ev["regarding"]["namespace"], "tenant-a");
    assert_eq!(ev["regarding"]["name"], "neighbour");
    assert_eq!(ev["reason"], "OutOfScope");
    assert_eq!(ev["type"], "Warning");
    let note = ev["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(
            "policy tenant-a/neighbour trap 0 (/etc/hostname): field matchAny[0].namespace"
        ) && note.contains("\"default\" is outside the policy's namespace \"tenant-a\""),
        "{note}"
    );

    // a re-list (410 Gone: the watchers list again) sees the same version
    // of the policy: nothing is posted again
    let lists = api.requests("Policy list");
    api.compact();
    api.restart();
    wait_until("the policies are listed again", || {
        api.requests("Policy list") > lists
    });
    // a new version of the policy with the same refusal counts a
    // recurrence on the same Event (series), never a second Event; its new
    // refusal is a new Event (posted after the recurrence: they are in order)
    api.apply(
        Kind::Policy,
        json!({"metadata": {"name": "neighbour", "namespace": "tenant-a"},
               "spec": {"traps": [{"path": "/etc/hostname",
                 "matchAny": [{"namespace": "default"}, {"namespace": "kube-system"}]}]}}),
    );
    wait_until("the new version is reported", || api.events().len() == 2);
    let events = api.events();
    let first = events
        .iter()
        .find(|e| e["metadata"]["name"] == ev["metadata"]["name"])
        .unwrap_or_else(|| panic!("the first Event is still there: {events:#?}"));
    assert_eq!(
        first["series"]["count"], 2,
        "the re-list counted nothing, the new version once: {first:#}"
    );
    let second = events
        .iter()
        .find(|e| e["metadata"]["name"] != ev["metadata"]["name"])
        .unwrap_or_else(|| panic!("a second Event: {events:#?}"));
    assert!(
        second["note"]
            .as_str()
            .is_some_and(|n| n.contains("field matchAny[1].namespace")),
        "{second:#}"
    );
    assert!(second["series"].is_null(), "{second:#}");
    assert_eq!(
        (api.requests("Event create"), api.requests("Event patch")),
        (2, 1)
    );
    assert_eq!(
        cluster.status().events.failed.load(Ordering::Relaxed),
        0,
        "every post was accepted"
    );
}

/// Namespace labels are waited for briefly only: when they cannot be read,
/// the first reconcile comes within the grace period, not a resync later.
#[test]
fn traps_arm_soon_when_namespace_labels_cannot_be_read() {
    let web = Container::start(&[("etc/hostname", "web-0\n")], &[]);
    let api = ApiServer::start();
    api.uninstall(Kind::Namespace);
    api.apply(Kind::Pod, pod_in("default", "web-0", NODE, &web.id));
    api.apply(
        Kind::Policy,
        kive_policy("kivebpf-system", "p", "/etc/hostname", json!([{}])),
    );
    let rt = node_runtime(NODE);
    // nothing else would wake the first reconcile for an hour
    let (_cluster, _k) = support::apiserver::cluster_source_every(
        &api,
        &rt,
        NODE,
        Default::default(),
        std::time::Duration::from_secs(3600),
    );
    wait_until("armed without namespace labels", || rt.metrics().armed == 1);
    // its watcher runs on its own task: wait for the refusal, never race it
    wait_until("the namespace list was refused", || {
        api.requests("Namespace absent") >= 1
    });
}
