//! Objects and clients the cluster tests build on the test API server: a
//! running pod, a KivePolicy with one decoy, the kive cluster source watching
//! the server.

use std::time::Duration;

use serde_json::json;

use super::ApiServer;

/// A running pod of `node` whose one container has `container_id`.
pub fn pod(name: &str, node: &str, container_id: &str) -> serde_json::Value {
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

/// [`pod`] in `namespace`.
pub fn pod_in(namespace: &str, name: &str, node: &str, container_id: &str) -> serde_json::Value {
    let mut p = pod(name, node, container_id);
    p["metadata"]["namespace"] = json!(namespace);
    p
}
/// A KivePolicy with one decoy at `path` in pods labelled app=web of
/// namespace default.
pub fn policy(name: &str, path: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "kivebpf-system"},
        "spec": {"alertVersion": "v1", "traps": [{
            "path": path, "create": true, "mode": 0o400,
            "metadata": {"severity": "high"},
            "matchAny": [{"namespace": "default", "matchLabels": {"app": "web"}}]
        }]}
    })
}

/// A KivePolicy of `namespace` with one decoy trap at `path` (created)
/// for the pods `match_any` selects.
pub fn kive_policy(
    namespace: &str,
    name: &str,
    path: &str,
    match_any: serde_json::Value,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"traps": [{"path": path, "create": true, "matchAny": match_any}]}
    })
}

/// The cluster source of node `node` watching `api` (resync every 200 ms)
/// and applying to `rt`; the temp dir holds its kubeconfig.
pub fn cluster_source(
    api: &ApiServer,
    rt: &kive::runtime::Runtime,
    node: &str,
    scope: kive::policy::scope::ScopeConfig,
) -> (kive::k8s::ClusterSource, tempfile::TempDir) {
    cluster_source_every(api, rt, node, scope, Duration::from_millis(200))
}

/// [`cluster_source`] with its own resync period.
pub fn cluster_source_every(
    api: &ApiServer,
    rt: &kive::runtime::Runtime,
    node: &str,
    scope: kive::policy::scope::ScopeConfig,
    resync: Duration,
) -> (kive::k8s::ClusterSource, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let cluster = kive::k8s::ClusterSource::start(
        kive::k8s::ClusterConfig {
            kubeconfig: Some(kubeconfig),
            node_name: node.into(),
            resync,
            scope,
        },
        rt.pod_controller(),
    )
    .expect("cluster source");
    (cluster, dir)
}
