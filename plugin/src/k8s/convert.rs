//! From API objects to kive's plain views (pure): pods to [`PodView`],
//! KivePolicy objects to compiled traps, and both to the wanted entries.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::DynamicObject;

use super::events::Notice;
use crate::policy::kubearmor::{self, Kind as KaKind};
use crate::policy::pods::{matching_containers, ContainerView, Labels, PodView};
use crate::policy::scope::{refused_callbacks, scope_traps, ScopeConfig};
use crate::policy::{compile, parse_document, CompiledTrap, PolicyError};
use crate::runtime::{ContainerOwner, DesiredEntry};

/// One KivePolicy, compiled.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    /// `namespace/name`.
    pub name: String,
    /// Its valid traps.
    pub traps: Vec<Arc<CompiledTrap>>,
    /// What was rejected, naming policy, trap and field.
    pub errors: Vec<PolicyError>,
    /// Parts of the policy left out (KubeArmor sections kive cannot enforce).
    pub warnings: Vec<String>,
    /// How many of `errors` (the last ones) are scope refusals.
    pub scope_refusals: usize,
    /// Callbacks the operator's destination rules refuse (the traps arm).
    pub refused_callbacks: Vec<String>,
    /// The API object, for Events about it.
    pub object: ObjectReference,
}

impl PolicyEntry {
    /// What to report on the policy object: each rejected trap or rule,
    /// each entry the scope refused, each part left out.
    pub fn notices(&self) -> Vec<Notice> {
        let compiled = self.errors.len().saturating_sub(self.scope_refusals);
        let mut out = Vec::new();
        for (i, e) in self.errors.iter().enumerate() {
            let reason = match e {
                _ if i < compiled => "PolicyRejected",
                PolicyError::Trap { field, .. } if field.ends_with(".host") => "HostTrapRefused",
                _ => "OutOfScope",
            };
            out.push(Notice {
                reason,
                note: e.to_string(),
            });
        }
        out.extend(self.refused_callbacks.iter().map(|c| Notice {
            reason: "CallbackRefused",
            note: c.clone(),
        }));
        out.extend(self.warnings.iter().map(|w| Notice {
            reason: "NotEnforced",
            note: w.clone(),
        }));
        out
    }
}

/// The reference of an API object, for Events about it.
pub fn object_ref(obj: &DynamicObject, api_version: &str, kind: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(
            obj.types
                .as_ref()
                .map_or(api_version, |t| t.api_version.as_str())
                .to_string(),
        ),
        kind: Some(
            obj.types
                .as_ref()
                .map_or(kind, |t| t.kind.as_str())
                .to_string(),
        ),
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        ..Default::default()
    }
}

impl PartialEq for PolicyEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.errors == other.errors
            && self.traps.len() == other.traps.len()
            && self
                .traps
                .iter()
                .zip(&other.traps)
                .all(|(a, b)| a.fingerprint == b.fingerprint)
    }
}

/// `namespace/name` of an object.
pub fn object_key(ns: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", ns.unwrap_or_default(), name.unwrap_or_default())
}

/// Compiles a KivePolicy object as served by the API server, within the
/// operator's scope. Each trap is decoded on its own: a malformed trap
/// never hides the others.
pub fn policy_entry(obj: &DynamicObject, scope: &ScopeConfig) -> PolicyEntry {
    let name = object_key(
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref(),
    );
    let mut doc = serde_json::Map::new();
    if let Some(t) = &obj.types {
        doc.insert("apiVersion".into(), t.api_version.clone().into());
        doc.insert("kind".into(), t.kind.clone().into());
    } else {
        doc.insert(
            "apiVersion".into(),
            "kivebpf.san7o.github.io/v1".to_string().into(),
        );
        doc.insert("kind".into(), "KivePolicy".to_string().into());
    }
    doc.insert(
        "metadata".into(),
        serde_json::json!({"name": obj.metadata.name, "namespace": obj.metadata.namespace}),
    );
    if let Some(spec) = obj.data.get("spec") {
        doc.insert("spec".into(), spec.clone());
    }
    let value = serde_yaml::to_value(serde_json::Value::Object(doc)).unwrap_or_default();
    let compiled = compile(vec![parse_document(format!("kivepolicy {name}"), value)]);
    let mut errors = compiled.errors;
    let traps = marked_from_cluster(compiled.traps);
    let before = errors.len();
    let traps = scope_traps(traps, scope, &mut errors);
    PolicyEntry {
        name,
        refused_callbacks: refused_callbacks(&traps, scope),
        traps,
        scope_refusals: errors.len() - before,
        errors,
        warnings: Vec::new(),
        object: object_ref(obj, "kivebpf.san7o.github.io/v1", "KivePolicy"),
    }
}

/// The compiled traps of a policy object served by the API server, marked
/// as such (the scope rules of cluster policies apply to them).
fn marked_from_cluster(traps: Vec<Arc<CompiledTrap>>) -> Vec<Arc<CompiledTrap>> {
    traps
        .into_iter()
        .map(|t| {
            let mut t = (*t).clone();
            t.from_cluster = true;
            Arc::new(t)
        })
        .collect()
}

/// Compiles a KubeArmor policy object as served by the API server. A
/// KubeArmorPolicy selects pods of its own namespace by construction; the
/// cluster-scoped kinds are cluster-wide; host traps need the operator.
pub fn kubearmor_entry(obj: &DynamicObject, kind: KaKind, scope: &ScopeConfig) -> PolicyEntry {
    let name = object_key(
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref(),
    );
    let doc = serde_json::json!({
        "apiVersion": format!("{}/{}", kubearmor::GROUP, kubearmor::VERSION),
        "kind": kind.as_str(),
        "metadata": {"name": obj.metadata.name, "namespace": obj.metadata.namespace},
        "spec": obj.data.get("spec").cloned().unwrap_or_default(),
    });
    let value = serde_yaml::to_value(doc).unwrap_or_default();
    let compiled = kubearmor::compile_value(&format!("{} {name}", kind.as_str()), value);
    let mut errors = compiled.errors;
    let traps = marked_from_cluster(compiled.traps);
    let scope = match kind {
        KaKind::Policy => scope.clone(),
        // cluster-scoped resources: no tenant namespace to stay in
        KaKind::ClusterPolicy | KaKind::HostPolicy => ScopeConfig {
            cluster_wide_namespaces: vec![String::new()],
            allow_host_traps: scope.allow_host_traps,
            callback_destinations: scope.callback_destinations.clone(),
        },
    };
    let before = errors.len();
    let traps = scope_traps(traps, &scope, &mut errors);
    PolicyEntry {
        name,
        refused_callbacks: refused_callbacks(&traps, &scope),
        traps,
        scope_refusals: errors.len() - before,
        errors,
        warnings: compiled.warnings,
        object: object_ref(
            obj,
            &format!("{}/{}", kubearmor::GROUP, kubearmor::VERSION),
            kind.as_str(),
        ),
    }
}

/// The view of a pod that matching and alerts use.
pub fn pod_view(pod: &Pod) -> PodView {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        if let Some(ip) = status.and_then(|s| s.pod_ip.clone()) {
            ips.push(ip);
        }
    }
    let mut containers = Vec::new();
    for statuses in [
        status.and_then(|s| s.container_statuses.as_ref()),
        status.and_then(|s| s.init_container_statuses.as_ref()),
    ]
    .into_iter()
    .flatten()
    {
        for cs in statuses {
            containers.push(ContainerView {
                name: cs.name.clone(),
                id: cs.container_id.clone().unwrap_or_default(),
                running: cs.state.as_ref().is_some_and(|s| s.running.is_some()),
                image: cs.image.clone(),
            });
        }
    }
    // containers without a status yet are known by name only
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        if !containers.iter().any(|v| v.name == c.name) {
            containers.push(ContainerView {
                name: c.name.clone(),
                id: String::new(),
                running: false,
                image: c.image.clone().unwrap_or_default(),
            });
        }
    }
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ips,
        labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        containers,
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        workload: workload(pod),
    }
}

/// The workload that owns a pod, from its controller owner reference. A
/// ReplicaSet created by a Deployment is named `<deployment>-<pod-template-hash>`
/// and a Job created by a CronJob `<cronjob>-<scheduled minute>`: the
/// Deployment or CronJob is read from those names (no API call per pod).
pub fn workload(pod: &Pod) -> Option<(String, String)> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let labels = pod.metadata.labels.as_ref();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = labels.and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                Some(deploy) => Some(("Deployment".into(), deploy.to_string())),
                None => Some(("ReplicaSet".into(), owner.name.clone())),
            }
        }
        "Job" => {
            let (base, suffix) = owner.name.rsplit_once('-').unwrap_or(("", ""));
            let scheduled =
                !base.is_empty() && suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit());
            if scheduled {
                Some(("CronJob".into(), base.to_string()))
            } else {
                Some(("Job".into(), owner.name.clone()))
            }
        }
        kind => Some((kind.to_string(), owner.name.clone())),
    }
}

/// Every (trap, container) this node must arm: pods on `node`, containers
/// that run and have an id, traps whose `matchAny` selects them; one shared
/// owner per container.
pub fn plan<'a>(
    policies: impl IntoIterator<Item = &'a PolicyEntry>,
    pods: impl IntoIterator<Item = &'a PodView>,
    namespace_labels: &BTreeMap<String, Labels>,
    node: &str,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Vec<DesiredEntry> {
    let traps: Vec<&Arc<CompiledTrap>> = policies.into_iter().flat_map(|p| &p.traps).collect();
    let mut out = Vec::new();
    for trap in &traps {
        // host: true survives the scope only when the operator allows it;
        // a node selector, only on the nodes it selects
        if trap.target.host_applies(node_labels) {
            out.push(DesiredEntry {
                trap: Arc::clone(trap),
                owner: Arc::default(),
                host: true,
            });
        }
    }
    for pod in pods {
        out.extend(plan_pod(&traps, pod, namespace_labels, node));
    }
    out
}

/// The entries one pod wants (none when it is not on `node`): the work of
/// a pod's change, in proportion to that pod.
pub fn plan_pod(
    traps: &[&Arc<CompiledTrap>],
    pod: &PodView,
    namespace_labels: &BTreeMap<String, Labels>,
    node: &str,
) -> Vec<DesiredEntry> {
    let mut out = Vec::new();
    if pod.node != node {
        return out;
    }
    // one owner per container, shared by its entries
    let mut owners: Vec<(&str, Arc<ContainerOwner>)> = Vec::new();
    for trap in traps {
        for c in matching_containers(trap, pod) {
            if !c.running || c.id.is_empty() {
                continue;
            }
            let owner = match owners.iter().find(|(id, _)| *id == c.id) {
                Some((_, o)) => Arc::clone(o),
                None => {
                    let o = Arc::new(ContainerOwner {
                        pod: pod.name.clone(),
                        namespace: pod.namespace.clone(),
                        pod_uid: pod.uid.clone(),
                        ip: pod.ip().to_string(),
                        labels: Arc::clone(&pod.labels),
                        container: c.name.clone(),
                        container_id: c.id.clone(),
                        image: c.image.clone(),
                        service_account: pod.service_account.clone(),
                        workload: pod.workload.clone(),
                        namespace_labels: namespace_labels
                            .get(&pod.namespace)
                            .cloned()
                            .unwrap_or_default(),
                    });
                    owners.push((c.id.as_str(), Arc::clone(&o)));
                    o
                }
            };
            out.push(DesiredEntry {
                trap: Arc::clone(trap),
                owner,
                host: false,
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
