//! One KubeArmor rule to one kive trap: its path, directory or pattern;
//! its conditions (readOnly, ownerOnly, fromSource, exec only); its action
//! (Allow needs fromSource); its severity, tags and message (the rule's
//! over the policy's).

use std::collections::BTreeMap;

use crate::alert::kive_alert::{META_MESSAGE, META_SEVERITY, META_TAGS};

use super::types::{Action, Kind, Rule, Spec};
use crate::policy::compile::{CompiledTrap, Conditions, PathSet, RuleInfo, Target, DEFAULT_MODE};
use crate::policy::error::{PolicyError, TrapRef};
use crate::policy::model::{PolicyMeta, TrapAction};

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

pub(super) struct Ctx<'a> {
    pub(super) kind: Kind,
    pub(super) meta: &'a PolicyMeta,
    pub(super) qualified: String,
    pub(super) spec: &'a Spec,
    pub(super) target: Target,
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
    pub(super) fn trap_ref(&self, index: usize, rule: &str, path: &str) -> TrapRef {
        TrapRef {
            policy: self.qualified.clone(),
            index,
            path: path.to_string(),
            rule: Some(rule.into()),
        }
    }

    /// One rule to one trap (or the error naming its field).
    pub(super) fn rule(
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
            .or(rule.execname.as_deref())
            .unwrap_or_default();
        let origin = self.trap_ref(index, label, shown);
        let err = |field: String, message: String| PolicyError::Trap {
            trap: origin.clone(),
            field,
            message,
        };
        let mut warnings = Vec::new();
        if let Some(name) = &rule.execname {
            return Err(err(
                "execname".into(),
                format!("{name:?}: an executable matched by name, which any copy or rename defeats; kive traps files by inode: give its path (or a pattern such as /usr/bin/{name}); rule not armed"),
            ));
        }
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
