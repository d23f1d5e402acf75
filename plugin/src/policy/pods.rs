//! Which containers of which pods a trap applies to (pure): kivebpf's
//! matching rules over plain views of pods.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::compile::{CompiledTrap, PodSelector};

/// A label map, shared: a pod's view and every one of its containers'
/// owner records hold the same map, the namespace's labels one map for all
/// its pods (≈ 1.6 KiB a pod not copied).
pub type Labels = Arc<BTreeMap<String, String>>;

/// A container of a pod, as the node loop sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// `runtime://<id>` from the pod status (empty until it has started).
    pub id: String,
    /// Whether the status says it is running.
    pub running: bool,
    /// Image, as the pod status reports it.
    pub image: String,
}

impl ContainerView {
    /// The bare 64-hex id (without `runtime://`).
    pub fn bare_id(&self) -> &str {
        self.id.rsplit("://").next().unwrap_or_default()
    }
}

/// A pod scheduled on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// Every IP of the pod (status.podIPs, else status.podIP).
    pub ips: Vec<String>,
    /// Labels.
    pub labels: Labels,
    /// spec.nodeName.
    pub node: String,
    /// Containers (regular and init).
    pub containers: Vec<ContainerView>,
    /// spec.serviceAccountName.
    pub service_account: String,
    /// The owning workload (kind, name): Deployment (through its
    /// ReplicaSet), StatefulSet, DaemonSet, Job, CronJob (through its Job).
    pub workload: Option<(String, String)>,
}

impl PodView {
    /// The first IP, or empty.
    pub fn ip(&self) -> &str {
        self.ips.first().map(String::as_str).unwrap_or_default()
    }
}

fn pod_matches(sel: &PodSelector, pod: &PodView) -> bool {
    sel.pod.as_ref().is_none_or(|p| *p == pod.name)
        && sel.namespace.as_ref().is_none_or(|n| *n == pod.namespace)
        && !sel.not_namespaces.contains(&pod.namespace)
        && sel
            .ip
            .as_ref()
            .is_none_or(|ip| pod.ips.iter().any(|i| i == ip))
        && sel.labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// The containers of `pod` that `trap` applies to: any `matchAny` entry
/// (OR) whose fields all match (AND); an empty list matches nothing.
pub fn matching_containers<'p>(trap: &CompiledTrap, pod: &'p PodView) -> Vec<&'p ContainerView> {
    pod.containers
        .iter()
        .filter(|c| {
            trap.target
                .pods
                .iter()
                .any(|sel| pod_matches(sel, pod) && sel.container.matches(&c.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_str;

    fn pod(
        name: &str,
        ns: &str,
        ip: &str,
        labels: &[(&str, &str)],
        containers: &[&str],
    ) -> PodView {
        PodView {
            name: name.into(),
            namespace: ns.into(),
            uid: format!("uid-{name}"),
            ips: vec![ip.into()],
            labels: Arc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            node: "node-a".into(),
            containers: containers
                .iter()
                .map(|c| ContainerView {
                    name: c.to_string(),
                    id: format!("containerd://{c}"),
                    running: true,
                    image: "nginx".into(),
                })
                .collect(),
            service_account: "default".into(),
            workload: None,
        }
    }

    fn trap(match_any: &str) -> std::sync::Arc<CompiledTrap> {
        let c = load_str(
            "t",
            &format!(
                "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: p}}\nspec:\n  traps:\n  - path: /s\n    matchAny: {match_any}\n"
            ),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c.traps[0].clone()
    }

    fn names(t: &CompiledTrap, p: &PodView) -> Vec<String> {
        matching_containers(t, p)
            .into_iter()
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn table() {
        let web = pod(
            "nginx-pod",
            "default",
            "10.0.0.5",
            &[("security-level", "high"), ("app", "web")],
            &["nginx", "sidecar"],
        );
        let cases: &[(&str, &[&str])] = &[
            // kivebpf's sample: all three fields must match
            (
                "[{pod: nginx-pod, namespace: default, matchLabels: {security-level: high}}]",
                &["nginx", "sidecar"],
            ),
            ("[{pod: nginx-pod, namespace: other}]", &[]),
            (
                "[{pod: other}, {namespace: default}]",
                &["nginx", "sidecar"],
            ), // OR
            (
                "[{namespace: default, containerName: 'regex:ngi.*'}]",
                &["nginx"],
            ),
            ("[{containerName: 'regex:ide'}]", &["sidecar"]), // unanchored
            ("[{containerName: 'regex:^ide'}]", &[]),
            ("[{containerName: 'glob:s*'}]", &["sidecar"]),
            ("[{containerName: 'glob:car'}]", &[]),
            ("[{containerName: nginx}]", &["nginx"]),
            ("[{ip: 10.0.0.5}]", &["nginx", "sidecar"]),
            ("[{ip: 10.0.0.6}]", &[]),
            (
                "[{matchLabels: {app: web, security-level: high}}]",
                &["nginx", "sidecar"],
            ),
            ("[{matchLabels: {app: db}}]", &[]),
            ("[{}]", &["nginx", "sidecar"]), // an empty entry matches anything
            ("[{pod: ''}]", &["nginx", "sidecar"]), // an empty field matches anything
            ("[]", &[]),                     // an empty matchAny matches nothing
            ("[{host: true}]", &[]),         // host traps are not pod traps
        ];
        for (m, want) in cases {
            assert_eq!(names(&trap(m), &web), *want, "matchAny: {m}");
        }
    }

    #[test]
    fn any_of_several_ips() {
        let mut p = pod("p", "default", "10.0.0.5", &[], &["c"]);
        p.ips.push("fd00::5".into());
        assert_eq!(names(&trap("[{ip: 'fd00::5'}]"), &p), ["c"]);
        assert_eq!(p.ip(), "10.0.0.5");
    }

    #[test]
    fn bare_ids() {
        let c = ContainerView {
            name: "c".into(),
            id: "containerd://abc".into(),
            running: true,
            image: String::new(),
        };
        assert_eq!(c.bare_id(), "abc");
    }
}
