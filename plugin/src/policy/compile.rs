//! From decoded policies to trap plans: semantic checks of each trap and
//! what it targets (the node itself, or pods), with compiled matchers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{PolicyError, TrapRef};
use super::matcher::NameMatcher;
use super::model::{KivePolicy, KiveTrap, KiveTrapMatch, RateLimit, TrapAction};
use super::parse::ParsedPolicy;

/// Mode of a created decoy when the trap gives none.
pub const DEFAULT_MODE: u32 = 0o444;
const MAX_PATH: usize = 4096;

/// One `matchAny` entry selecting pods and containers.
#[derive(Debug, Clone)]
pub struct PodSelector {
    /// Pod name, exact.
    pub pod: Option<String>,
    /// Namespace, exact.
    pub namespace: Option<String>,
    /// Pod IP.
    pub ip: Option<String>,
    /// Labels that must all match.
    pub labels: BTreeMap<String, String>,
    /// Container name selector.
    pub container: NameMatcher,
    /// Index of the entry in the trap's `matchAny`.
    pub entry: usize,
    /// Namespaces excluded (KubeArmorClusterPolicy `NotIn`).
    pub not_namespaces: Vec<String>,
}

/// What a trap applies to.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The node's own filesystem (`host: true`).
    pub host: bool,
    /// Index in `matchAny` of the `host: true` entry.
    pub host_entry: usize,
    /// Pod selectors (OR-ed).
    pub pods: Vec<PodSelector>,
    /// Labels the node must carry for the host part to apply
    /// (KubeArmorHostPolicy `nodeSelector.matchLabels`; empty: every node).
    pub node_labels: BTreeMap<String, String>,
}

impl Target {
    /// Whether the host part applies on a node with `labels` (`None`: the
    /// node's labels are not known, so only a target without a node
    /// selector applies).
    pub fn host_applies(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.host
            && (self.node_labels.is_empty()
                || labels.is_some_and(|l| {
                    self.node_labels
                        .iter()
                        .all(|(k, v)| l.get(k).is_some_and(|x| x == v))
                }))
    }
}

/// A valid trap, ready to be planned onto files.
#[derive(Debug, Clone)]
pub struct CompiledTrap {
    /// Where it was defined.
    pub origin: TrapRef,
    /// `metadata.name` of the policy (`kive-policy-name`).
    pub policy_name: String,
    /// `metadata.namespace` of the policy.
    pub policy_namespace: Option<String>,
    /// Absolute path inside the target's root.
    pub path: String,
    /// Create the file when missing.
    pub create: bool,
    /// Mode of a created file.
    pub mode: u32,
    /// Callback URL.
    pub callback: Option<String>,
    /// `custom-metadata`.
    pub metadata: BTreeMap<String, String>,
    /// Audit or block.
    pub action: TrapAction,
    /// What it applies to.
    pub target: Target,
    /// `spec.alertVersion` (always v1 today).
    pub alert_version: String,
    /// Non-fatal remarks (armed anyway), each naming the trap.
    pub warnings: Vec<String>,
    /// Identity of the trap's content: changes when the policy changes it.
    pub fingerprint: String,
    /// Alert limit per process, if any.
    pub rate_limit: Option<RateLimit>,
    /// A pod's trap may arm a file on a node-shared mount (never created).
    pub allow_shared_file: bool,
    /// Read from the Kubernetes API server (scoped by [`super::scope`]).
    pub from_cluster: bool,
    /// Conditions decided in the kernel on a hit (KubeArmor rules).
    pub conditions: Conditions,
    /// Severity, tags and message of a KubeArmor rule.
    pub info: RuleInfo,
    /// The files of a directory or pattern, expanded on the node (with the
    /// most files armed for it); `path` is then the directory or pattern.
    pub path_set: Option<(PathSet, usize)>,
    /// For one file of a path set: the set's fingerprint.
    pub set_parent: Option<String>,
}

impl CompiledTrap {
    /// What the kernel does on a hit, in words (`kive check`).
    pub fn enforcement(&self) -> String {
        let mut parts = vec![match self.action {
            TrapAction::Audit => "audit".to_string(),
            TrapAction::Block => "block".to_string(),
        }];
        let c = &self.conditions;
        parts.push(if c.exec_only { "executions" } else { "opens" }.to_string());
        if c.read_only {
            parts.push("reads pass".into());
        }
        if c.owner_only {
            parts.push("the owner passes".into());
        }
        if !c.sources.is_empty() {
            let list = c.sources.join(", ");
            parts.push(if c.sources_allow {
                format!("only from [{list}] allowed")
            } else {
                format!("only from [{list}]")
            });
        }
        match &self.path_set {
            Some((PathSet::Directory { dir, recursive }, cap)) => parts.push(format!(
                "every file in {dir}{} (at most {cap})",
                if *recursive { " and below" } else { "" }
            )),
            Some((PathSet::Pattern(p), cap)) => {
                parts.push(format!("every file matching {p} (at most {cap})"))
            }
            None => {}
        }
        if let Some(s) = self.info.severity {
            parts.push(format!("severity {s}"));
        }
        parts.join(", ")
    }
}

/// A set of files named by a directory or a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSet {
    /// Every file in `dir` (and below, when recursive).
    Directory {
        /// Absolute directory.
        dir: String,
        /// Subdirectories too.
        recursive: bool,
    },
    /// Every file matching a glob (`*` within a component, `**` across).
    Pattern(String),
}

/// Conditions under which an access to a trapped file passes silently,
/// decided in the kernel (`KIVE_TRAP_F_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Only executions count (`process` rules).
    pub exec_only: bool,
    /// Reads pass; writes and appends count (`readOnly`).
    pub read_only: bool,
    /// The file owner's accesses pass (`ownerOnly`).
    pub owner_only: bool,
    /// Executables (`fromSource` paths, in the owner's root).
    pub sources: Vec<String>,
    /// The sources pass and every other executable counts (`Allow`);
    /// otherwise only the sources count.
    pub sources_allow: bool,
}

impl Conditions {
    /// The `KIVE_TRAP_F_*` condition bits.
    pub fn bits(&self) -> u32 {
        use crate::trap::wire as w;
        let mut b = 0;
        if self.exec_only {
            b |= w::TRAP_F_EXEC_ONLY;
        }
        if self.read_only {
            b |= w::TRAP_F_READ_ONLY;
        }
        if self.owner_only {
            b |= w::TRAP_F_OWNER_ONLY;
        }
        if self.sources_allow {
            b |= w::TRAP_F_SOURCES_ALLOW;
        } else if !self.sources.is_empty() {
            b |= w::TRAP_F_SOURCES;
        }
        b
    }
}

/// What a KubeArmor rule adds to its alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// 1 to 10.
    pub severity: Option<u8>,
    /// Tags.
    pub tags: Vec<String>,
    /// Message.
    pub message: String,
}

/// The result of compiling a set of policy documents.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Valid traps.
    pub traps: Vec<Arc<CompiledTrap>>,
    /// Every document or trap that was rejected.
    pub errors: Vec<PolicyError>,
    /// Policy-level remarks (parts of a policy left out, armed anyway).
    pub warnings: Vec<String>,
}

impl Compiled {
    /// Appends another result.
    pub fn extend(&mut self, other: Compiled) {
        self.traps.extend(other.traps);
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

/// Decimal spellings of common modes (e.g. JSON's `420` for 0644): not
/// octal written without its leading zero.
const DECIMAL_MODES: [u32; 9] = [256, 288, 292, 384, 416, 420, 436, 493, 511];

fn looks_like_unprefixed_octal(mode: u32) -> bool {
    let s = mode.to_string();
    (3..=4).contains(&s.len())
        && s.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && !DECIMAL_MODES.contains(&mode)
}

fn selector(m: &KiveTrapMatch, entry: usize) -> Result<PodSelector, String> {
    let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    Ok(PodSelector {
        pod: nonempty(&m.pod),
        namespace: nonempty(&m.namespace),
        ip: nonempty(&m.ip),
        labels: m.match_labels.clone(),
        container: NameMatcher::compile(m.container_name.as_deref())?,
        entry,
        not_namespaces: Vec::new(),
    })
}

/// Most files a `directory` trap arms (per trap, per owner).
pub const DIRECTORY_CAP: usize = 1024;

/// The conditions and file set of a KivePolicy trap's additive fields
/// (`readOnly`, `ownerOnly`, `fromSource`, `allowFrom`, `directory`,
/// `recursive`): the same building blocks as KubeArmor rules.
fn trap_conditions(
    trap: &KiveTrap,
    err: &dyn Fn(String, String) -> PolicyError,
) -> Result<(Conditions, Option<(PathSet, usize)>), PolicyError> {
    if !trap.from_source.is_empty() && !trap.allow_from.is_empty() {
        return Err(err(
            "allowFrom".into(),
            "give fromSource (the trap applies to these executables only) or allowFrom (these pass, every other counts), not both".into(),
        ));
    }
    let (field, sources) = if trap.allow_from.is_empty() {
        ("fromSource", &trap.from_source)
    } else {
        ("allowFrom", &trap.allow_from)
    };
    for (i, src) in sources.iter().enumerate() {
        if !src.starts_with('/') || src.contains('\0') || src.len() > MAX_PATH {
            return Err(err(
                format!("{field}[{i}]"),
                format!("{src:?}: an executable is named by its absolute path"),
            ));
        }
    }
    if trap.recursive && !trap.directory {
        return Err(err(
            "recursive".into(),
            "applies to a directory: add directory: true".into(),
        ));
    }
    let set = if trap.directory {
        if trap.create {
            return Err(err(
                "create".into(),
                "a directory trap arms the files that are there; it creates none".into(),
            ));
        }
        let dir = trap.path.trim_end_matches('/');
        Some((
            PathSet::Directory {
                dir: if dir.is_empty() {
                    "/".into()
                } else {
                    dir.into()
                },
                recursive: trap.recursive,
            },
            DIRECTORY_CAP,
        ))
    } else {
        None
    };
    Ok((
        Conditions {
            exec_only: false,
            read_only: trap.read_only,
            owner_only: trap.owner_only,
            sources: sources.clone(),
            sources_allow: !trap.allow_from.is_empty(),
        },
        set,
    ))
}

/// Checks one trap of a policy.
pub fn compile_trap(
    policy: &KivePolicy,
    index: usize,
    trap: &KiveTrap,
) -> Result<CompiledTrap, PolicyError> {
    let origin = TrapRef {
        policy: policy.qualified_name(),
        index,
        path: trap.path.clone(),
        rule: None,
    };
    let err = |field: String, message: String| PolicyError::Trap {
        trap: origin.clone(),
        field,
        message,
    };
    if trap.path.is_empty() {
        return Err(err("path".into(), "a trap needs a path".into()));
    }
    if !trap.path.starts_with('/') {
        return Err(err(
            "path".into(),
            format!("{:?} is relative: a trap path must be absolute", trap.path),
        ));
    }
    if trap.path.contains('\0') || trap.path.len() > MAX_PATH {
        return Err(err("path".into(), "contains NUL or is too long".into()));
    }
    if trap.path.ends_with('/') && !trap.directory {
        return Err(err(
            "path".into(),
            "names a directory: kive traps files (directory: true traps the files in it)".into(),
        ));
    }
    let mut warnings = Vec::new();
    let mode = match trap.mode {
        Some(m) if m > 0o7777 => {
            return Err(err(
                "mode".into(),
                format!("{m} (0o{m:o}) is not a file mode"),
            ))
        }
        Some(m) => {
            if looks_like_unprefixed_octal(m) {
                warnings.push(format!(
                    "{origin}: field mode: {m} is decimal (0o{m:o}); write 0{m} for octal {m}"
                ));
            }
            m
        }
        None => DEFAULT_MODE,
    };
    if let Some(cb) = &trap.callback {
        if !(cb.starts_with("http://") || cb.starts_with("https://")) {
            return Err(err(
                "callback".into(),
                format!("{cb:?}: only http:// and https:// URLs are supported"),
            ));
        }
    }
    if let Some(rl) = trap.rate_limit {
        if rl.alerts == 0 || rl.seconds == 0 {
            return Err(err(
                "rateLimit".into(),
                "alerts and seconds must both be at least 1".into(),
            ));
        }
    }
    let (conditions, path_set) = trap_conditions(trap, &err)?;
    let mut target = Target::default();
    for (i, m) in trap.match_any.iter().enumerate() {
        if m.host {
            if m.has_pod_fields() {
                return Err(err(
                    format!("matchAny[{i}].host"),
                    "host: true selects the node's own files and cannot be combined with pod, namespace, ip, containerName or matchLabels".into(),
                ));
            }
            target.host = true;
            target.host_entry = i;
            continue;
        }
        let sel = selector(m, i).map_err(|e| err(format!("matchAny[{i}].containerName"), e))?;
        target.pods.push(sel);
    }
    if trap.match_any.is_empty() {
        warnings.push(format!(
            "{origin}: field matchAny: empty, so this trap matches nothing"
        ));
    }
    Ok(CompiledTrap {
        policy_name: policy.meta.name.clone(),
        policy_namespace: policy.meta.namespace.clone(),
        path: trap.path.clone(),
        create: trap.create,
        mode,
        callback: trap.callback.clone(),
        metadata: trap.metadata.clone(),
        action: trap.action.unwrap_or_default(),
        target,
        alert_version: policy
            .spec
            .alert_version
            .clone()
            .unwrap_or_else(|| "v1".to_string()),
        warnings,
        rate_limit: trap.rate_limit,
        allow_shared_file: trap.allow_shared_file,
        from_cluster: false,
        conditions,
        info: RuleInfo::default(),
        path_set,
        set_parent: None,
        fingerprint: serde_json::to_string(&(&origin.policy, index, trap))
            .unwrap_or_else(|_| format!("{origin}")),
        origin,
    })
}

/// Compiles parsed documents (and the errors of those that did not parse).
pub fn compile(docs: Vec<Result<ParsedPolicy, PolicyError>>) -> Compiled {
    let mut out = Compiled::default();
    for doc in docs {
        match doc {
            Err(e) => out.errors.push(e),
            Ok(p) => {
                let mut errors = p.trap_errors;
                for (trap, &index) in p.policy.spec.traps.iter().zip(&p.indices) {
                    match compile_trap(&p.policy, index, trap) {
                        Ok(t) => out.traps.push(Arc::new(t)),
                        Err(e) => errors.push(e),
                    }
                }
                errors.sort_by_key(|e| match e {
                    PolicyError::Trap { trap, .. } => trap.index,
                    _ => 0,
                });
                out.errors.extend(errors);
            }
        }
    }
    out
}
