//! KubeArmor's policy types (`security.kubearmor.com/v1`): the elements
//! kive reads. Unknown fields are kept out of the types and reported by
//! the mapping, so a newer KubeArmor field never rejects a policy.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The API group.
pub const GROUP: &str = "security.kubearmor.com";
/// The served version.
pub const VERSION: &str = "v1";

/// The three kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Namespaced, `selector.matchLabels`.
    Policy,
    /// Cluster-scoped, `selector.matchExpressions` on `namespace`.
    ClusterPolicy,
    /// The node itself, `nodeSelector`.
    HostPolicy,
}

impl Kind {
    /// From a `kind` string.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "KubeArmorPolicy" => Self::Policy,
            "KubeArmorClusterPolicy" => Self::ClusterPolicy,
            "KubeArmorHostPolicy" => Self::HostPolicy,
            _ => return None,
        })
    }

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "KubeArmorPolicy",
            Self::ClusterPolicy => "KubeArmorClusterPolicy",
            Self::HostPolicy => "KubeArmorHostPolicy",
        }
    }

    /// The resource's plural (API path).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Policy => "kubearmorpolicies",
            Self::ClusterPolicy => "kubearmorclusterpolicies",
            Self::HostPolicy => "kubearmorhostpolicies",
        }
    }
}

/// `spec.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Action {
    /// Only the `fromSource` executables may access.
    Allow,
    /// Report.
    Audit,
    /// Deny (KubeArmor's default).
    Block,
}

/// `spec` (the parts kive maps; the rest is named in warnings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// 1 to 10.
    #[serde(default)]
    pub severity: Option<i64>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
    /// Pod / namespace selector.
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Node selector (host policies).
    #[serde(default)]
    pub node_selector: Option<Selector>,
    /// Executions.
    #[serde(default)]
    pub process: Option<Section>,
    /// Opens.
    #[serde(default)]
    pub file: Option<Section>,
    /// Default action of the rules.
    #[serde(default)]
    pub action: Option<Action>,
}

/// `selector` / `nodeSelector`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must all match.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions (cluster policies: key `namespace`).
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expression {
    /// `namespace`.
    #[serde(default)]
    pub key: String,
    /// `In` or `NotIn`.
    #[serde(default)]
    pub operator: String,
    /// Namespaces.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A `process` or `file` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    /// Files.
    #[serde(default)]
    pub match_paths: Vec<serde_yaml::Value>,
    /// Directories.
    #[serde(default)]
    pub match_directories: Vec<serde_yaml::Value>,
    /// Patterns.
    #[serde(default)]
    pub match_patterns: Vec<serde_yaml::Value>,
}

/// One rule of a section (the union of the three match kinds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// `matchPaths`.
    #[serde(default)]
    pub path: Option<String>,
    /// `matchDirectories`.
    #[serde(default)]
    pub dir: Option<String>,
    /// `matchPatterns`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `matchPaths` by executable name (KubeArmor matches the name; kive
    /// traps inodes, so such a rule is refused with a clear message).
    #[serde(default)]
    pub execname: Option<String>,
    /// Subdirectories too.
    #[serde(default)]
    pub recursive: bool,
    /// Reads pass.
    #[serde(default)]
    pub read_only: bool,
    /// The owner's accesses pass.
    #[serde(default)]
    pub owner_only: bool,
    /// Executables the rule applies to (or, with Allow, that may access).
    #[serde(default)]
    pub from_source: Vec<Source>,
    /// Overrides.
    #[serde(default)]
    pub action: Option<Action>,
    /// Overrides.
    #[serde(default)]
    pub severity: Option<i64>,
    /// Overrides.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Overrides.
    #[serde(default)]
    pub message: Option<String>,
}

/// One `fromSource` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// An executable.
    #[serde(default)]
    pub path: Option<String>,
    /// A directory of executables (not supported: reported).
    #[serde(default)]
    pub dir: Option<String>,
    /// With `dir`.
    #[serde(default)]
    pub recursive: bool,
}
