//! init_config keys kive no longer reads under that name: accepted with a
//! warning naming the key and its replacement (Falco upgrades have broken
//! on plugins whose strict schema refused a key an older falco.yaml still
//! had), while unknown keys stay errors. The schema published to Falco
//! lists them too (marked `deprecated`), so Falco's own validation of
//! `init_config` lets them through. Pure: the caller logs the warnings.
//!
//! Top-level keys only. No key of a released kive has been renamed or
//! removed yet: [`DEPRECATED`] holds one example entry (`queueSize`, an
//! alias of `queueCapacity`) that shows and tests the mechanism.

use serde_json::{Map, Value};

/// A key kive used to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeprecatedKey {
    /// The old key.
    pub key: &'static str,
    /// The key its value now goes to (`None`: removed, the value is
    /// ignored).
    pub replacement: Option<&'static str>,
    /// Why, for the warning and the schema.
    pub note: &'static str,
}

/// Every deprecated key (add a row when renaming or removing a key).
pub const DEPRECATED: &[DeprecatedKey] = &[DeprecatedKey {
    key: "queueSize",
    replacement: Some("queueCapacity"),
    note: "example entry of the deprecated-keys table",
}];

/// Rewrites the deprecated keys of `config` in place (a renamed key's
/// value moves to its replacement unless that is set too; a removed key
/// is dropped) and returns one warning per key found.
pub fn migrate(config: &mut Map<String, Value>) -> Vec<String> {
    migrate_with(DEPRECATED, config)
}

fn migrate_with(table: &[DeprecatedKey], config: &mut Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    for d in table {
        let Some(value) = config.remove(d.key) else {
            continue;
        };
        warnings.push(match d.replacement {
            Some(new) if config.contains_key(new) => format!(
                "init_config: `{}` is deprecated, renamed to `{new}`; both are set: `{}` is ignored",
                d.key, d.key
            ),
            Some(new) => {
                config.insert(new.to_string(), value);
                format!(
                    "init_config: `{}` is deprecated, renamed to `{new}`: its value is used for `{new}`; rename it in falco.yaml",
                    d.key
                )
            }
            None => format!(
                "init_config: `{}` was removed and is ignored ({}); delete it from falco.yaml",
                d.key, d.note
            ),
        });
    }
    warnings
}

/// Adds the deprecated keys to the published schema (any value,
/// `deprecated: true`), so that Falco accepts them in `init_config`.
pub fn add_to_schema(schema: &mut schemars::Schema) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for d in DEPRECATED {
        let description = match d.replacement {
            Some(new) => format!(
                "Deprecated: renamed to `{new}` (its value is used for it, with a warning)."
            ),
            None => format!("Removed: ignored with a warning ({}).", d.note),
        };
        props.insert(
            d.key.to_string(),
            serde_json::json!({ "deprecated": true, "description": description }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    const TABLE: &[DeprecatedKey] = &[
        DeprecatedKey {
            key: "oldName",
            replacement: Some("newName"),
            note: "renamed",
        },
        DeprecatedKey {
            key: "gone",
            replacement: None,
            note: "no longer needed",
        },
    ];

    #[test]
    fn a_renamed_key_moves_to_its_replacement_with_a_warning() {
        let mut m = obj(json!({"oldName": 5, "other": true}));
        let w = migrate_with(TABLE, &mut m);
        assert_eq!(m, obj(json!({"newName": 5, "other": true})));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`oldName`") && w[0].contains("`newName`"),
            "{w:?}"
        );
    }

    #[test]
    fn the_new_key_wins_when_both_are_set() {
        let mut m = obj(json!({"oldName": 5, "newName": 6}));
        let w = migrate_with(TABLE, &mut m);
        assert_eq!(m, obj(json!({"newName": 6})));
        assert!(w[0].contains("both are set"), "{w:?}");
    }

    #[test]
    fn a_removed_key_is_dropped_with_a_warning_and_others_are_untouched() {
        let mut m = obj(json!({"gone": [1], "unknownKey": 1}));
        let w = migrate_with(TABLE, &mut m);
        assert_eq!(m, obj(json!({"unknownKey": 1})), "unknown keys stay");
        assert!(w[0].contains("`gone` was removed") && w[0].contains("no longer needed"));
        let mut clean = obj(json!({"newName": 1}));
        assert!(migrate_with(TABLE, &mut clean).is_empty());
    }

    #[test]
    fn every_replacement_is_a_current_key_and_no_old_key_is() {
        let schema: Value =
            serde_json::from_str(&crate::falco::KiveConfig::schema_json()).expect("schema");
        let props = schema["properties"].as_object().expect("properties");
        for d in DEPRECATED {
            assert_eq!(props[d.key]["deprecated"], json!(true), "{}", d.key);
            if let Some(new) = d.replacement {
                assert!(
                    props
                        .get(new)
                        .is_some_and(|p| p.get("deprecated").is_none()),
                    "{} → {new}: not a current key",
                    d.key
                );
            }
        }
    }
}
