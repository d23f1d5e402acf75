//! From a KubeArmor policy to kive's traps: the spec's sections checked
//! (those outside kive's reach named), its selector mapped
//! ([`super::selector`]), and each rule of the `file` and `process`
//! sections to one trap ([`super::rule`]). Everything left out is named
//! (policy, rule, field).

use super::rule::Ctx;
use super::selector::selector_target;
use super::types::{Kind, Rule, Section, Spec};
use crate::policy::compile::Compiled;
use crate::policy::error::PolicyError;
use crate::policy::model::PolicyMeta;

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
                // execname is refused by the rule itself, with its reason
                "matchPaths" => rule.path.is_some() || rule.execname.is_some(),
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
