//! From a KubeArmor policy to kive's traps: each `matchPaths` rule of the
//! `file` and `process` sections becomes one trap on the file's inode, with
//! its conditions (readOnly, ownerOnly, fromSource, exec only) decided in
//! the kernel; directories and patterns become path sets expanded on the
//! node. Everything left out is named (policy, rule, field).

use std::collections::BTreeMap;

use crate::alert::kive_alert::{META_MESSAGE, META_SEVERITY, META_TAGS};

use super::types::{Action, Kind, Rule, Section, Selector, Spec};
use crate::policy::compile::{
    Compiled, CompiledTrap, Conditions, PathSet, PodSelector, RuleInfo, Target, DEFAULT_MODE,
};
use crate::policy::error::{PolicyError, TrapRef};
use crate::policy::matcher::NameMatcher;
use crate::policy::model::{PolicyMeta, TrapAction};

/// Sections of the spec outside kive's reach: warned about, ignored.
const OUT_OF_REACH: [&str; 3] = ["network", "capabilities", "syscalls"];
/// Sections kive reads.
const KNOWN: [&str; 8] = [
    "severity",
    "tags",
    "message",
    "selector",
    "nodeSelector",
    "process",
    "file",
    "action",
];

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

struct Ctx<'a> {
    kind: Kind,
    meta: &'a PolicyMeta,
    qualified: String,
    spec: &'a Spec,
    target: Target,
}

fn severity(
    v: Option<i64>,
    field: &str,
    err: &dyn Fn(String, String) -> PolicyError,
) -> Result<Option<u8>, PolicyError> {
    match v {
        None => Ok(None),
        Some(s @ 1..=10) => Ok(Some(s as u8)),
        Some(s) => Err(err(field.into(), format!("{s} is not between 1 and 10"))),
    }
}

impl Ctx<'_> {
    fn trap_ref(&self, index: usize, rule: &str, path: &str) -> TrapRef {
        TrapRef {
            policy: self.qualified.clone(),
            index,
            path: path.to_string(),
            rule: Some(rule.into()),
        }
    }

    /// One rule to one trap (or the error naming its field).
    fn rule(
        &self,
        index: usize,
        label: &str,
        rule: &Rule,
        exec: bool,
        cap: usize,
    ) -> Result<CompiledTrap, PolicyError> {
        let shown = rule
            .path
            .as_deref()
            .or(rule.dir.as_deref())
            .or(rule.pattern.as_deref())
            .unwrap_or_default();
        let origin = self.trap_ref(index, label, shown);
        let err = |field: String, message: String| PolicyError::Trap {
            trap: origin.clone(),
            field,
            message,
        };
        let mut warnings = Vec::new();
        let (path, set) = match (&rule.path, &rule.dir, &rule.pattern) {
            (Some(p), None, None) if is_glob(p) => (p.clone(), Some(PathSet::Pattern(p.clone()))),
            (Some(p), None, None) => (p.clone(), None),
            (None, Some(d), None) => (
                d.clone(),
                Some(PathSet::Directory {
                    dir: d.clone(),
                    recursive: rule.recursive,
                }),
            ),
            (None, None, Some(p)) => (p.clone(), Some(PathSet::Pattern(p.clone()))),
            (None, None, None) => {
                return Err(err(
                    "path".into(),
                    "a rule needs path, dir or pattern".into(),
                ))
            }
            _ => {
                return Err(err(
                    "path".into(),
                    "give one of path, dir and pattern per rule".into(),
                ))
            }
        };
        let field = if rule.dir.is_some() {
            "dir"
        } else if rule.pattern.is_some() {
            "pattern"
        } else {
            "path"
        };
        if !path.starts_with('/') {
            return Err(err(
                field.into(),
                format!("{path:?} is relative: KubeArmor paths are absolute"),
            ));
        }
        if path.contains('\0') || path.len() > 4096 {
            return Err(err(field.into(), "contains NUL or is too long".into()));
        }
        if rule.path.is_some() && path.ends_with('/') {
            return Err(err(
                "path".into(),
                "ends with /: use matchDirectories for a directory".into(),
            ));
        }
        if let Some(PathSet::Pattern(p)) = &set {
            if let Err(e) = glob::Pattern::new(p) {
                return Err(err(field.into(), format!("invalid pattern {p:?}: {e}")));
            }
        }
        if exec && rule.read_only {
            warnings.push(format!(
                "{origin}: field readOnly: has no meaning for a process rule: ignored"
            ));
        }
        let action = rule.action.or(self.spec.action).unwrap_or(Action::Block);
        let mut sources = Vec::new();
        for (i, s) in rule.from_source.iter().enumerate() {
            match (&s.path, &s.dir) {
                (Some(p), None) if p.starts_with('/') && !p.ends_with('/') => {
                    sources.push(p.clone())
                }
                (Some(p), None) => {
                    return Err(err(
                        format!("fromSource[{i}].path"),
                        format!("{p:?} is not an absolute executable path"),
                    ))
                }
                (None, Some(_)) => {
                    return Err(err(
                        format!("fromSource[{i}].dir"),
                        "directories of sources are not supported (executables are matched by inode): list the executables with path; rule not armed".into(),
                    ))
                }
                _ => {
                    return Err(err(
                        format!("fromSource[{i}]"),
                        "give path (an executable)".into(),
                    ))
                }
            }
        }
        let (trap_action, sources_allow) = match action {
            Action::Audit => (TrapAction::Audit, false),
            Action::Block => (TrapAction::Block, false),
            Action::Allow if sources.is_empty() => {
                return Err(err(
                    "action".into(),
                    "Allow without fromSource is a default-deny posture (everything not allowed is denied), which kive does not enforce: rule not armed; list the allowed executables in fromSource, or use Audit or Block".into(),
                ))
            }
            // only the sources may access: every other executable is blocked
            Action::Allow => (TrapAction::Block, true),
        };
        let sev = severity(
            rule.severity.or(self.spec.severity),
            if rule.severity.is_some() {
                "severity"
            } else {
                "spec.severity"
            },
            &err,
        )?;
        let info = RuleInfo {
            severity: sev.or(Some(1)),
            tags: rule.tags.clone().unwrap_or_else(|| self.spec.tags.clone()),
            message: rule
                .message
                .clone()
                .or_else(|| self.spec.message.clone())
                .unwrap_or_default(),
        };
        let conditions = Conditions {
            exec_only: exec,
            read_only: rule.read_only && !exec,
            owner_only: rule.owner_only,
            sources,
            sources_allow,
        };
        let mut metadata = BTreeMap::from([
            ("kubearmor-kind".to_string(), self.kind.as_str().to_string()),
            ("kubearmor-rule".to_string(), label.to_string()),
        ]);
        if let Some(s) = info.severity {
            metadata.insert(META_SEVERITY.into(), s.to_string());
        }
        if !info.tags.is_empty() {
            metadata.insert(META_TAGS.into(), info.tags.join(","));
        }
        if !info.message.is_empty() {
            metadata.insert(META_MESSAGE.into(), info.message.clone());
        }
        let fingerprint = format!(
            "kubearmor|{}|{}|{label}|{path}|{set:?}|{trap_action:?}|{conditions:?}|{info:?}|{:?}",
            self.kind.as_str(),
            self.qualified,
            self.target_fingerprint()
        );
        Ok(CompiledTrap {
            origin,
            policy_name: self.meta.name.clone(),
            policy_namespace: match self.kind {
                Kind::Policy => self.meta.namespace.clone(),
                _ => None,
            },
            path,
            create: false,
            mode: DEFAULT_MODE,
            callback: None,
            metadata,
            action: trap_action,
            target: self.target.clone(),
            alert_version: "v1".into(),
            warnings,
            fingerprint,
            rate_limit: None,
            // a pod's own filesystems only, like every trap that does not ask
            allow_shared_file: false,
            from_cluster: false,
            conditions,
            info,
            path_set: set.map(|s| (s, cap)),
            set_parent: None,
        })
    }

    fn target_fingerprint(&self) -> String {
        let pods: Vec<String> = self
            .target
            .pods
            .iter()
            .map(|p| format!("{:?}|{:?}|{:?}", p.namespace, p.labels, p.not_namespaces))
            .collect();
        format!("{}|{}", self.target.host, pods.join(";"))
    }
}

fn selector_target(
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
                host: false,
                host_entry: 0,
                pods: vec![s],
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
                host: false,
                host_entry: 0,
                pods,
            })
        }
        Kind::HostPolicy => {
            if spec
                .node_selector
                .as_ref()
                .is_some_and(|n| !n.match_labels.is_empty() || !n.match_expressions.is_empty())
            {
                warnings.push(format!(
                    "policy {qualified}: field spec.nodeSelector: node labels are not evaluated: the policy applies to every node kive reads it on"
                ));
            }
            Ok(Target {
                host: true,
                host_entry: 0,
                pods: Vec::new(),
            })
        }
    }
}

fn section_rules(
    ctx: &Ctx<'_>,
    name: &str,
    section: &Section,
    exec: bool,
    cap: usize,
    out: &mut Compiled,
    index: &mut usize,
) {
    let lists = [
        ("matchPaths", &section.match_paths),
        ("matchDirectories", &section.match_directories),
        ("matchPatterns", &section.match_patterns),
    ];
    for (list, rules) in lists {
        for (i, value) in rules.iter().enumerate() {
            let label = format!("{name}.{list}[{i}]");
            let hint = ["path", "dir", "pattern"]
                .iter()
                .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
                .unwrap_or_default()
                .to_string();
            let at = *index;
            *index += 1;
            let rule: Rule = match serde_path_to_error::deserialize(value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    let field = e.path().to_string();
                    out.errors.push(PolicyError::Trap {
                        trap: ctx.trap_ref(at, &label, &hint),
                        field: if field == "." { "(rule)".into() } else { field },
                        message: e.into_inner().to_string(),
                    });
                    continue;
                }
            };
            let kind_ok = match list {
                "matchPaths" => rule.path.is_some(),
                "matchDirectories" => rule.dir.is_some(),
                _ => rule.pattern.is_some(),
            };
            if !kind_ok {
                out.errors.push(PolicyError::Trap {
                    trap: ctx.trap_ref(at, &label, &hint),
                    field: match list {
                        "matchPaths" => "path",
                        "matchDirectories" => "dir",
                        _ => "pattern",
                    }
                    .into(),
                    message: format!("a {list} rule needs it"),
                });
                continue;
            }
            match ctx.rule(at, &label, &rule, exec, cap) {
                Ok(t) => out.traps.push(std::sync::Arc::new(t)),
                Err(e) => out.errors.push(e),
            }
        }
    }
}

/// Compiles one KubeArmor document (`kind` known, envelope checked).
pub fn compile_kubearmor(
    document: &str,
    kind: Kind,
    meta: PolicyMeta,
    spec_value: serde_yaml::Value,
    cap: usize,
) -> Compiled {
    let mut out = Compiled::default();
    let doc_err = |field: &str, message: String| PolicyError::Document {
        document: document.to_string(),
        field: field.to_string(),
        message,
    };
    let qualified = match (&kind, &meta.namespace) {
        (Kind::Policy, Some(ns)) if !ns.is_empty() => format!("{ns}/{}", meta.name),
        (Kind::Policy, _) => format!("default/{}", meta.name),
        _ => meta.name.clone(),
    };
    if let Some(map) = spec_value.as_mapping() {
        for (k, _) in map {
            let k = k.as_str().unwrap_or_default();
            if OUT_OF_REACH.contains(&k) {
                out.warnings.push(format!(
                    "policy {qualified}: section spec.{k} is outside kive's reach (kive enforces file and process rules by inode): ignored; the file and process rules still apply"
                ));
            } else if !KNOWN.contains(&k) {
                out.warnings.push(format!(
                    "policy {qualified}: field spec.{k} is not supported: ignored"
                ));
            }
        }
    }
    let spec: Spec = match serde_path_to_error::deserialize(spec_value) {
        Ok(s) => s,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            out.errors.push(doc_err(&field, e.into_inner().to_string()));
            return out;
        }
    };
    let target = match selector_target(kind, &meta, &spec, &doc_err, &mut out.warnings, &qualified)
    {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    let ctx = Ctx {
        kind,
        meta: &meta,
        qualified: qualified.clone(),
        spec: &spec,
        target,
    };
    let mut index = 0;
    if let Some(p) = &spec.process {
        section_rules(&ctx, "process", p, true, cap, &mut out, &mut index);
    }
    if let Some(f) = &spec.file {
        section_rules(&ctx, "file", f, false, cap, &mut out, &mut index);
    }
    if index == 0 {
        out.warnings.push(format!(
            "policy {qualified}: no file or process rule: nothing for kive to arm"
        ));
    }
    out
}
