//! Tenant scope of policies read from the API server (pure): a KivePolicy
//! acts only on pods of its own namespace, unless its namespace is one the
//! operator declares cluster-wide; host traps from the cluster only when the
//! operator allows them, and only from a cluster-wide namespace.

use std::sync::Arc;

use super::compile::CompiledTrap;
use super::error::PolicyError;
use crate::callback::{DestinationConfig, Destinations};

/// The namespace whose policies apply cluster-wide by default (kivebpf's).
pub const DEFAULT_CLUSTER_WIDE: &str = "kivebpf-system";

/// The operator's scope settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeConfig {
    /// Namespaces whose policies may select pods of any namespace.
    pub cluster_wide_namespaces: Vec<String>,
    /// Whether `host: true` traps from the cluster are armed (policies of
    /// cluster-wide namespaces only).
    pub allow_host_traps: bool,
    /// The callback destination rules, to report a refused `callback` when
    /// the policy is read (`None`: only when an alert is sent).
    pub callback_destinations: Option<DestinationConfig>,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        Self {
            cluster_wide_namespaces: vec![DEFAULT_CLUSTER_WIDE.to_string()],
            allow_host_traps: false,
            callback_destinations: None,
        }
    }
}

impl ScopeConfig {
    /// Whether policies of `namespace` apply cluster-wide.
    pub fn is_cluster_wide(&self, namespace: &str) -> bool {
        self.cluster_wide_namespaces.iter().any(|n| n == namespace)
    }
}

/// A trap as the scope allows it (`None`: nothing of it may be armed), and
/// what was left out, each naming policy, trap and field.
#[derive(Debug)]
pub struct Scoped {
    /// The trap to arm, narrowed to what its policy may select.
    pub trap: Option<CompiledTrap>,
    /// Each `matchAny` entry left out, and why.
    pub refused: Vec<PolicyError>,
}

/// Applies the scope rules to one trap of a policy of `trap.policy_namespace`.
///
/// A tenant (not cluster-wide) policy: an entry without `namespace` is
/// narrowed to the policy's namespace; an entry naming another namespace
/// is refused; `host: true` is refused; `allowSharedFile` is refused (the
/// trap arms on the pod's own filesystems only: a tenant's pod that mounts
/// a node directory or another pod's volume does not make it the tenant's
/// to trap, or with `action: block` to deny to every process of the node).
/// A cluster-wide policy keeps its entries; its `host: true` is refused
/// unless host traps are allowed.
pub fn apply_scope(trap: &CompiledTrap, cfg: &ScopeConfig) -> Scoped {
    let own = trap.policy_namespace.clone().unwrap_or_default();
    let cluster_wide = cfg.is_cluster_wide(&own);
    let mut out = trap.clone();
    let mut refused = Vec::new();
    let refuse = |field: String, message: String| PolicyError::Trap {
        trap: trap.origin.clone(),
        field,
        message,
    };
    let wide = || cfg.cluster_wide_namespaces.join(", ");
    if trap.target.host {
        let field = format!("matchAny[{}].host", trap.target.host_entry);
        if !cfg.allow_host_traps {
            out.target.host = false;
            refused.push(refuse(
                field,
                "host traps from the cluster are off: the operator allows them with kubernetes.allowHostTraps (kive run --allow-cluster-host-traps); not armed".into(),
            ));
        } else if !cluster_wide {
            out.target.host = false;
            refused.push(refuse(
                field,
                format!(
                    "a policy in namespace {own:?} may not trap the node's files: only policies in the cluster-wide namespaces ({}) may; not armed",
                    wide()
                ),
            ));
        }
    }
    if !cluster_wide && trap.allow_shared_file {
        out.allow_shared_file = false;
        refused.push(refuse(
            "allowSharedFile".into(),
            format!(
                "a policy in namespace {own:?} may not trap node-shared files (hostPath, node disk, another pod's volume): only policies in the cluster-wide namespaces ({}) may; armed on the pod's own filesystems only",
                wide()
            ),
        ));
    }
    if !cluster_wide {
        out.target.pods.retain_mut(|sel| match &sel.namespace {
            None => {
                sel.namespace = Some(own.clone());
                true
            }
            Some(ns) if *ns == own => true,
            Some(ns) => {
                refused.push(refuse(
                    format!("matchAny[{}].namespace", sel.entry),
                    format!(
                        "{ns:?} is outside the policy's namespace {own:?}: a KivePolicy acts only on pods of its own namespace (cluster-wide namespaces: {}); not armed",
                        wide()
                    ),
                ));
                false
            }
        });
    }
    let had_target = trap.target.host || !trap.target.pods.is_empty();
    let has_target = out.target.host || !out.target.pods.is_empty();
    Scoped {
        trap: (has_target || !had_target).then_some(out),
        refused,
    }
}

/// Each trap's `callback` the operator's destination rules refuse as
/// written (a literal address, a name not allowed), naming policy, trap and
/// field; the trap itself still arms. A name that resolves to a refused
/// address is refused when an alert is sent.
pub fn refused_callbacks(traps: &[Arc<CompiledTrap>], cfg: &ScopeConfig) -> Vec<String> {
    let Some(rules) = cfg
        .callback_destinations
        .clone()
        .and_then(|d| Destinations::new(d).ok())
    else {
        return Vec::new();
    };
    traps
        .iter()
        .filter_map(|t| {
            let url = t.callback.as_deref()?;
            let refusal = rules.check_url(url).err()?;
            Some(format!(
                "{}: field callback: {url}: {refusal}; alerts of this trap are not sent there",
                t.origin
            ))
        })
        .collect()
}

/// Applies [`apply_scope`] to every trap of a policy; refusals are appended
/// to `errors`.
pub fn scope_traps(
    traps: Vec<Arc<CompiledTrap>>,
    cfg: &ScopeConfig,
    errors: &mut Vec<PolicyError>,
) -> Vec<Arc<CompiledTrap>> {
    let mut kept = Vec::with_capacity(traps.len());
    for t in traps {
        let s = apply_scope(&t, cfg);
        errors.extend(s.refused);
        if let Some(t) = s.trap {
            kept.push(Arc::new(t));
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_str;

    fn trap(ns: &str, match_any: &str) -> CompiledTrap {
        let c = load_str(
            "t",
            &format!(
                "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n  traps:\n  - path: /etc/hostname\n    matchAny: {match_any}\n"
            ),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        (*c.traps[0]).clone()
    }

    fn namespaces(t: &CompiledTrap) -> Vec<Option<String>> {
        t.target.pods.iter().map(|s| s.namespace.clone()).collect()
    }

    #[test]
    fn a_tenant_entry_without_namespace_is_narrowed_to_its_own() {
        let s = apply_scope(&trap("tenant-a", "[{}]"), &ScopeConfig::default());
        assert!(s.refused.is_empty(), "{:?}", s.refused);
        let t = s.trap.expect("armed in its own namespace");
        assert_eq!(namespaces(&t), [Some("tenant-a".to_string())]);
    }

    #[test]
    fn a_tenant_entry_naming_another_namespace_is_refused_naming_the_field() {
        let s = apply_scope(
            &trap("tenant-a", "[{namespace: default}]"),
            &ScopeConfig::default(),
        );
        assert!(s.trap.is_none(), "nothing of it is armed");
        assert_eq!(s.refused.len(), 1);
        let msg = s.refused[0].to_string();
        assert!(
            msg.contains("policy tenant-a/p trap 0 (/etc/hostname)")
                && msg.contains("field matchAny[0].namespace")
                && msg.contains("\"default\" is outside the policy's namespace \"tenant-a\""),
            "{msg}"
        );
    }

    #[test]
    fn the_other_entries_of_a_partly_refused_trap_stay() {
        let s = apply_scope(
            &trap(
                "tenant-a",
                "[{namespace: default}, {namespace: tenant-a, pod: x}, {pod: y}]",
            ),
            &ScopeConfig::default(),
        );
        assert_eq!(s.refused.len(), 1);
        assert!(s.refused[0].to_string().contains("matchAny[0].namespace"));
        let t = s.trap.expect("the rest is armed");
        assert_eq!(
            namespaces(&t),
            [Some("tenant-a".to_string()), Some("tenant-a".to_string())]
        );
        assert_eq!(t.target.pods[1].entry, 2);
    }

    #[test]
    fn cluster_wide_namespaces_keep_every_entry() {
        let s = apply_scope(
            &trap("kivebpf-system", "[{}, {namespace: default}]"),
            &ScopeConfig::default(),
        );
        assert!(s.refused.is_empty());
        assert_eq!(
            namespaces(&s.trap.expect("kept")),
            [None, Some("default".to_string())]
        );
        let cfg = ScopeConfig {
            cluster_wide_namespaces: vec!["sec".into()],
            ..Default::default()
        };
        assert!(apply_scope(&trap("sec", "[{namespace: default}]"), &cfg)
            .refused
            .is_empty());
        assert_eq!(
            apply_scope(&trap("kivebpf-system", "[{namespace: default}]"), &cfg)
                .refused
                .len(),
            1,
            "the default is replaced, not extended"
        );
    }

    #[test]
    fn host_traps_from_the_cluster_need_the_setting_and_a_cluster_wide_namespace() {
        let off = apply_scope(
            &trap("kivebpf-system", "[{host: true}]"),
            &ScopeConfig::default(),
        );
        assert!(off.trap.is_none());
        let msg = off.refused[0].to_string();
        assert!(
            msg.contains("field matchAny[0].host") && msg.contains("allowHostTraps"),
            "{msg}"
        );
        let on = ScopeConfig {
            allow_host_traps: true,
            ..Default::default()
        };
        let s = apply_scope(&trap("kivebpf-system", "[{host: true}]"), &on);
        assert!(s.refused.is_empty());
        assert!(s.trap.expect("armed").target.host);
        let tenant = apply_scope(&trap("tenant-a", "[{pod: x}, {host: true}]"), &on);
        assert_eq!(tenant.refused.len(), 1);
        let msg = tenant.refused[0].to_string();
        assert!(
            msg.contains("field matchAny[1].host") && msg.contains("\"tenant-a\" may not trap"),
            "{msg}"
        );
        let t = tenant.trap.expect("its pod entry stays");
        assert!(!t.target.host);
        assert_eq!(namespaces(&t), [Some("tenant-a".to_string())]);
    }

    #[test]
    fn a_tenant_s_allow_shared_file_is_refused_and_its_trap_stays_on_the_pod_s_own_files() {
        let shared = |ns: &str| {
            let c = load_str(
                "t",
                &format!(
                    "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n  traps:\n  - path: /data/x\n    allowSharedFile: true\n    matchAny: [{{}}]\n"
                ),
            );
            assert!(c.errors.is_empty(), "{:?}", c.errors);
            (*c.traps[0]).clone()
        };
        let tenant = apply_scope(&shared("tenant-a"), &ScopeConfig::default());
        assert_eq!(tenant.refused.len(), 1, "{:?}", tenant.refused);
        let msg = tenant.refused[0].to_string();
        assert!(
            msg.contains("policy tenant-a/p trap 0 (/data/x)")
                && msg.contains("field allowSharedFile")
                && msg.contains("\"tenant-a\" may not trap node-shared files"),
            "{msg}"
        );
        let t = tenant.trap.expect("still armed on the pod's own files");
        assert!(!t.allow_shared_file, "the flag is off");
        assert_eq!(namespaces(&t), [Some("tenant-a".to_string())]);
        let wide = apply_scope(&shared("kivebpf-system"), &ScopeConfig::default());
        assert!(wide.refused.is_empty(), "{:?}", wide.refused);
        assert!(
            wide.trap.expect("armed").allow_shared_file,
            "a cluster-wide policy keeps it"
        );
    }

    #[test]
    fn an_empty_match_any_is_left_as_it_is() {
        let s = apply_scope(&trap("tenant-a", "[]"), &ScopeConfig::default());
        assert!(s.refused.is_empty());
        assert!(
            s.trap.is_some(),
            "its warning already says it matches nothing"
        );
    }

    #[test]
    fn callbacks_the_destination_rules_refuse_are_named_when_read() {
        let c = load_str(
            "t",
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: p, namespace: tenant-a}\nspec:\n  traps:\n  - path: /a\n    callback: http://169.254.169.254/latest\n    matchAny: [{}]\n  - path: /b\n    callback: https://collector.example:9376/in\n    matchAny: [{}]\n",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert!(
            refused_callbacks(&c.traps, &ScopeConfig::default()).is_empty(),
            "no rules given: checked when sent only"
        );
        let cfg = ScopeConfig {
            callback_destinations: Some(DestinationConfig::default()),
            ..Default::default()
        };
        let refused = refused_callbacks(&c.traps, &cfg);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains(
                "policy tenant-a/p trap 0 (/a): field callback: http://169.254.169.254/latest"
            ) && refused[0].contains("cloud metadata"),
            "{}",
            refused[0]
        );
    }
}
