//! Which pods or node a KubeArmor policy selects: `selector.matchLabels`
//! in the policy's namespace (KubeArmorPolicy), `matchExpressions` on
//! `namespace` with `In` / `NotIn` (KubeArmorClusterPolicy), the node itself
//! (KubeArmorHostPolicy).

use std::collections::BTreeMap;

use super::types::{Kind, Selector, Spec};
use crate::policy::compile::{PodSelector, Target};
use crate::policy::error::PolicyError;
use crate::policy::matcher::NameMatcher;
use crate::policy::model::PolicyMeta;

pub(super) fn selector_target(
    kind: Kind,
    meta: &PolicyMeta,
    spec: &Spec,
    doc_err: &dyn Fn(&str, String) -> PolicyError,
    warnings: &mut Vec<String>,
    qualified: &str,
) -> Result<Target, PolicyError> {
    let base = |labels: BTreeMap<String, String>, entry: usize| PodSelector {
        pod: None,
        namespace: None,
        ip: None,
        labels,
        container: NameMatcher::Any,
        entry,
        not_namespaces: Vec::new(),
    };
    let sel: Selector = spec.selector.clone().unwrap_or_default();
    match kind {
        Kind::Policy => {
            let mut s = base(sel.match_labels, 0);
            s.namespace = Some(
                meta.namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".into()),
            );
            if !sel.match_expressions.is_empty() {
                return Err(doc_err(
                    "spec.selector.matchExpressions",
                    "not supported in a KubeArmorPolicy (use matchLabels)".into(),
                ));
            }
            Ok(Target {
                pods: vec![s],
                ..Target::default()
            })
        }
        Kind::ClusterPolicy => {
            let mut ins: Option<Vec<String>> = None;
            let mut not_ins = Vec::new();
            for (i, e) in sel.match_expressions.iter().enumerate() {
                if e.key != "namespace" {
                    return Err(doc_err(
                        &format!("spec.selector.matchExpressions[{i}].key"),
                        format!("{:?}: only namespace is supported", e.key),
                    ));
                }
                match e.operator.as_str() {
                    "In" => {
                        ins = Some(match ins {
                            None => e.values.clone(),
                            Some(prev) => {
                                prev.into_iter().filter(|v| e.values.contains(v)).collect()
                            }
                        })
                    }
                    "NotIn" => not_ins.extend(e.values.iter().cloned()),
                    op => {
                        return Err(doc_err(
                            &format!("spec.selector.matchExpressions[{i}].operator"),
                            format!("{op:?}: In or NotIn"),
                        ))
                    }
                }
            }
            let pods = match ins {
                Some(ns) => ns
                    .into_iter()
                    .filter(|n| !not_ins.contains(n))
                    .enumerate()
                    .map(|(i, n)| {
                        let mut s = base(sel.match_labels.clone(), i);
                        s.namespace = Some(n);
                        s
                    })
                    .collect(),
                None => {
                    let mut s = base(sel.match_labels.clone(), 0);
                    s.not_namespaces = not_ins;
                    vec![s]
                }
            };
            if pods.is_empty() {
                warnings.push(format!(
                    "policy {qualified}: field spec.selector: selects no namespace"
                ));
            }
            Ok(Target {
                pods,
                ..Target::default()
            })
        }
        Kind::HostPolicy => {
            let node = spec.node_selector.clone().unwrap_or_default();
            if !node.match_expressions.is_empty() {
                return Err(doc_err(
                    "spec.nodeSelector.matchExpressions",
                    "not supported in a KubeArmorHostPolicy (use matchLabels)".into(),
                ));
            }
            Ok(Target {
                host: true,
                host_entry: 0,
                pods: Vec::new(),
                node_labels: node.match_labels,
            })
        }
    }
}
