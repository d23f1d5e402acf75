//! Reading KivePolicy YAML: a stream of documents, each checked on its own,
//! and each trap of a document decoded on its own.

use serde::Deserialize;

use super::error::{PolicyError, TrapRef};
use super::model::{KivePolicy, KivePolicySpec, KiveTrap, PolicyMeta, GROUP, KIND, VERSIONS};

/// A policy document whose envelope is valid; its traps decoded one by one.
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    /// `file#index` of the document.
    pub document: String,
    /// The policy, with only the traps that decoded.
    pub policy: KivePolicy,
    /// The index in the document's `spec.traps` of each trap kept.
    pub indices: Vec<usize>,
    /// Traps that did not decode (the rest of the policy is kept).
    pub trap_errors: Vec<PolicyError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: PolicyMeta,
    #[serde(default)]
    spec: Option<SpecEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecEnvelope {
    #[serde(default)]
    alert_version: Option<String>,
    #[serde(default)]
    traps: Vec<serde_yaml::Value>,
}

fn trap_path_hint(v: &serde_yaml::Value) -> String {
    v.get("path")
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Decodes one trap value, naming the field on error.
pub fn decode_trap(v: serde_yaml::Value, trap: TrapRef) -> Result<KiveTrap, PolicyError> {
    serde_path_to_error::deserialize::<_, KiveTrap>(v).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports unknown fields at the parent path; name the field itself
        let field = match (field.as_str(), unknown_field_name(&message)) {
            (".", Some(f)) => f,
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => "(trap)".to_string(),
            (p, None) => p.to_string(),
        };
        PolicyError::Trap {
            trap,
            field,
            message,
        }
    })
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Parses every document of a YAML stream. Each element is one document:
/// a policy (with per-trap errors inside) or the error that rejected it.
/// Empty documents are skipped.
pub fn parse_policies(source: &str, text: &str) -> Vec<Result<ParsedPolicy, PolicyError>> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = format!("{source}#{index}");
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                out.push(Err(PolicyError::Yaml {
                    document,
                    message: e.to_string(),
                }));
                // a syntax error ends the stream: later documents cannot be located
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        out.push(parse_document(document, value));
    }
    out
}

/// Reads one policy document given as a value (from YAML, or from the API
/// server's JSON converted to a YAML value).
pub fn parse_document(
    document: String,
    value: serde_yaml::Value,
) -> Result<ParsedPolicy, PolicyError> {
    let doc_err = |field: &str, message: String| PolicyError::Document {
        document: document.clone(),
        field: field.to_string(),
        message,
    };
    let env: Envelope = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        doc_err(&field, e.into_inner().to_string())
    })?;
    let (group, version) = env.api_version.split_once('/').unwrap_or(("", ""));
    if group != GROUP || !VERSIONS.contains(&version) {
        return Err(doc_err(
            "apiVersion",
            format!(
                "{:?} is not served: expected {GROUP}/{}",
                env.api_version,
                VERSIONS.join(" or ")
            ),
        ));
    }
    if env.kind != KIND {
        return Err(doc_err("kind", format!("{:?}, expected {KIND}", env.kind)));
    }
    if env.metadata.name.is_empty() {
        return Err(doc_err("metadata.name", "a policy needs a name".into()));
    }
    let spec = env.spec.unwrap_or(SpecEnvelope {
        alert_version: None,
        traps: Vec::new(),
    });
    let mut policy = KivePolicy {
        api_version: env.api_version,
        meta: env.metadata,
        spec: KivePolicySpec {
            alert_version: spec.alert_version,
            traps: Vec::new(),
        },
    };
    if let Some(v) = &policy.spec.alert_version {
        if v != "v1" {
            return Err(doc_err(
                "spec.alertVersion",
                format!("{v:?}: kive writes KiveAlert v1"),
            ));
        }
    }
    let name = policy.qualified_name();
    let mut trap_errors = Vec::new();
    let mut indices = Vec::new();
    for (index, v) in spec.traps.into_iter().enumerate() {
        let trap = TrapRef {
            policy: name.clone(),
            index,
            path: trap_path_hint(&v),
            rule: None,
        };
        match decode_trap(v, trap) {
            Ok(t) => {
                policy.spec.traps.push(t);
                indices.push(index);
            }
            Err(e) => trap_errors.push(e),
        }
    }
    Ok(ParsedPolicy {
        document,
        policy,
        indices,
        trap_errors,
    })
}
