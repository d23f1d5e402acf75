use super::*;

fn pod_json(name: &str, node: &str, cid: &str, running: bool) -> Pod {
    let state = if running {
        serde_json::json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    } else {
        serde_json::json!({"waiting": {"reason": "ContainerCreating"}})
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"security-level": "high"}},
        "spec": {"nodeName": node, "containers": [{"name": "nginx", "image": "nginx:1"}]},
        "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                   "containerStatuses": [{"name": "nginx", "image": "nginx:1", "imageID": "",
                     "containerID": cid, "ready": running, "restartCount": 0, "state": state}]}
    }))
    .expect("pod json")
}

fn policy(spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kivebpf.san7o.github.io/v1", "kind": "KivePolicy",
        "metadata": {"name": "kive-sample-policy", "namespace": "kivebpf-system"},
        "spec": spec
    }))
    .expect("object")
}

fn policy_entry_default(o: &DynamicObject) -> PolicyEntry {
    policy_entry(o, &ScopeConfig::default())
}

#[test]
fn pods_become_views_with_every_ip_and_container_state() {
    let v = pod_view(&pod_json("nginx-pod", "node-a", "containerd://abc", true));
    assert_eq!(v.name, "nginx-pod");
    assert_eq!(v.ips, ["10.0.0.5", "fd00::5"]);
    assert_eq!(v.node, "node-a");
    assert_eq!(v.containers.len(), 1);
    assert!(v.containers[0].running);
    assert_eq!(v.containers[0].id, "containerd://abc");
    assert_eq!(v.containers[0].image, "nginx:1");
    let w = pod_view(&pod_json("p", "node-a", "", false));
    assert!(!w.containers[0].running);
}

#[test]
fn the_seed_sample_policy_plans_onto_its_pod_on_this_node_only() {
    let e = policy_entry_default(&policy(serde_json::json!({
        "alertVersion": "v1",
        "traps": [{"path": "/secret.txt", "create": true, "mode": 444,
                   "matchAny": [{"pod": "nginx-pod", "namespace": "default",
                                 "matchLabels": {"security-level": "high"}}],
                   "metadata": {"severity": "medium"}}]
    })));
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(e.name, "kivebpf-system/kive-sample-policy");
    let here = pod_view(&pod_json("nginx-pod", "node-a", "containerd://aaa", true));
    let there = pod_view(&pod_json("nginx-pod", "node-b", "containerd://bbb", true));
    let starting = pod_view(&pod_json("nginx-pod", "node-a", "", false));
    let pods = [here, there, starting];
    let ns = BTreeMap::from([(
        "default".to_string(),
        Arc::new(BTreeMap::from([("team".to_string(), "web".to_string())])),
    )]);
    let d = plan([&e], &pods, &ns, "node-a", None);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].owner.container_id, "containerd://aaa");
    assert_eq!(d[0].owner.pod, "nginx-pod");
    assert_eq!(d[0].owner.ip, "10.0.0.5");
    assert_eq!(d[0].trap.path, "/secret.txt");
    assert_eq!(
        d[0].owner.namespace_labels.get("team").map(String::as_str),
        Some("web")
    );
}

#[test]
fn owners_share_the_label_maps_of_their_pod_and_namespace() {
    let e = policy_entry_default(&policy(serde_json::json!({
        "traps": [{"path": "/a", "matchAny": [{"namespace": "default"}]},
                  {"path": "/b", "matchAny": [{"namespace": "default"}]}]
    })));
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    let pods = [
        pod_view(&pod_json("one", "node-a", "containerd://aaa", true)),
        pod_view(&pod_json("two", "node-a", "containerd://bbb", true)),
    ];
    let team = Arc::new(BTreeMap::from([("team".to_string(), "web".to_string())]));
    let ns = BTreeMap::from([("default".to_string(), Arc::clone(&team))]);
    let d = plan([&e], &pods, &ns, "node-a", None);
    assert_eq!(d.len(), 4, "2 traps x 2 pods: {d:?}");
    for entry in &d {
        let pod = pods
            .iter()
            .find(|p| p.name == entry.owner.pod)
            .expect("an owner of a planned pod");
        assert!(
            Arc::ptr_eq(&entry.owner.labels, &pod.labels),
            "{}: the owner holds its pod view's label map, not a copy",
            entry.owner.pod
        );
        assert!(
            Arc::ptr_eq(&entry.owner.namespace_labels, &team),
            "{}: the owner holds the namespace's label map, not a copy",
            entry.owner.pod
        );
        assert_eq!(
            entry.owner.labels.get("security-level").map(String::as_str),
            Some("high")
        );
    }
}

#[test]
fn a_host_policy_plans_only_onto_the_nodes_its_node_selector_names() {
    let o: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "security.kubearmor.com/v1", "kind": "KubeArmorHostPolicy",
        "metadata": {"name": "pki"},
        "spec": {"nodeSelector": {"matchLabels": {"node-role.kubernetes.io/control-plane": ""}},
                 "file": {"matchPaths": [{"path": "/etc/kubernetes/admin.conf"}]},
                 "action": "Audit"}
    }))
    .expect("object");
    let scope = ScopeConfig {
        allow_host_traps: true,
        ..ScopeConfig::default()
    };
    let e = kubearmor_entry(&o, KaKind::HostPolicy, &scope);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    let ns = BTreeMap::new();
    let control = BTreeMap::from([
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "node-role.kubernetes.io/control-plane".to_string(),
            String::new(),
        ),
    ]);
    let worker = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
    let on = |labels: Option<&BTreeMap<String, String>>| {
        plan([&e], &[] as &[PodView], &ns, "node-a", labels).len()
    };
    assert_eq!(on(Some(&control)), 1, "armed on a control-plane node");
    assert_eq!(on(Some(&worker)), 0, "not on a worker");
    assert_eq!(on(None), 0, "not while the node's labels are unknown");
}

fn owned(kind: &str, name: &str, hash: Option<&str>) -> Pod {
    let mut labels = serde_json::Map::new();
    if let Some(h) = hash {
        labels.insert("pod-template-hash".into(), h.into());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "labels": labels, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}]}
    }))
    .expect("pod")
}

#[test]
fn workloads_from_owner_references() {
    // (owner kind, owner name, pod-template-hash label) → (workload kind, name)
    let cases = [
        (
            "ReplicaSet",
            "web-7d9c6b5f4",
            Some("7d9c6b5f4"),
            "Deployment",
            "web",
        ),
        ("ReplicaSet", "bare-rs", None, "ReplicaSet", "bare-rs"),
        ("StatefulSet", "db", None, "StatefulSet", "db"),
        ("DaemonSet", "agent", None, "DaemonSet", "agent"),
        ("Job", "backup-29012345", None, "CronJob", "backup"),
        ("Job", "migrate", None, "Job", "migrate"),
    ];
    for (kind, name, hash, want_kind, want_name) in cases {
        assert_eq!(
            workload(&owned(kind, name, hash)),
            Some((want_kind.into(), want_name.into())),
            "{kind} {name} {hash:?}"
        );
    }
    let orphan: Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).expect("pod");
    assert_eq!(workload(&orphan), None);
}

#[test]
fn a_broken_trap_in_an_api_object_leaves_the_others() {
    let e = policy_entry_default(&policy(serde_json::json!({
        "traps": [
            {"path": "/ok", "matchAny": [{"namespace": "default"}]},
            {"path": "/bad", "matchAny": [{"containerName": "regex:("}]},
            {"path": "/worse", "unknown": 1}
        ]
    })));
    assert_eq!(e.traps.len(), 1);
    assert_eq!(e.errors.len(), 2);
    let msg = e.errors[0].to_string();
    assert!(
        msg.contains("policy kivebpf-system/kive-sample-policy trap 1 (/bad)"),
        "{msg}"
    );
}

#[test]
fn each_rejection_and_refusal_is_a_notice_with_its_reason() {
    let mut o: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kivebpf.san7o.github.io/v1", "kind": "KivePolicy",
        "metadata": {"name": "p", "namespace": "tenant-a", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"traps": [
            {"path": "/bad", "matchAny": [{"containerName": "regex:("}]},
            {"path": "/x", "matchAny": [{"namespace": "default"}, {"host": true}]}
        ]}
    }))
    .expect("object");
    let e = policy_entry_default(&o);
    let reasons: Vec<_> = e.notices().iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["PolicyRejected", "HostTrapRefused", "OutOfScope"]);
    let notes: Vec<_> = e.notices().into_iter().map(|n| n.note).collect();
    assert!(
        notes[0].contains("trap 0 (/bad): field matchAny[0].containerName"),
        "{notes:?}"
    );
    assert!(
        notes[2].contains("field matchAny[0].namespace"),
        "{notes:?}"
    );
    assert_eq!(e.object.kind.as_deref(), Some("KivePolicy"));
    assert_eq!(e.object.uid.as_deref(), Some("u-1"));
    assert_eq!(e.object.resource_version.as_deref(), Some("7"));
    // list items come without apiVersion/kind: the reference still names them
    o.types = None;
    let e = policy_entry_default(&o);
    assert_eq!(
        e.object.api_version.as_deref(),
        Some("kivebpf.san7o.github.io/v1")
    );
    assert_eq!(e.object.kind.as_deref(), Some("KivePolicy"));
}
