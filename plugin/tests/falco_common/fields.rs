//! The plugin's fields as the tests see them: the field list parsed from
//! `plugin_get_fields`, and an extracted value.

use std::sync::OnceLock;

use super::{string, So};

/// An extracted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// No value.
    None,
    /// A number.
    U64(u64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list field.
    List(Vec<Value>),
}

impl Value {
    /// A string value.
    pub fn s(v: &str) -> Value {
        Value::Str(v.to_string())
    }
}

/// The plugin API's type code of a field type name.
pub fn ftype(name: &str) -> u32 {
    match name {
        "uint64" => 8,
        "string" => 9,
        "bool" => 25,
        other => panic!("unexpected field type {other}"),
    }
}

/// One entry of the plugin's field list.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    pub name: String,
    pub ty: String,
    pub list: bool,
    pub key: bool,
    pub required: bool,
    /// `display` (empty when the field has none).
    pub display: String,
}

/// The field list of the built library.
pub struct Fields;

impl Fields {
    /// Parsed once from `plugin_get_fields`.
    pub fn get() -> &'static [FieldInfo] {
        static F: OnceLock<Vec<FieldInfo>> = OnceLock::new();
        F.get_or_init(|| {
            // SAFETY: a static JSON string.
            let json = string(unsafe { (So::get().get_fields)() });
            let v: Vec<serde_json::Value> = serde_json::from_str(&json).expect("fields JSON");
            v.iter()
                .map(|f| FieldInfo {
                    name: f["name"].as_str().expect("name").into(),
                    ty: f["type"].as_str().expect("type").into(),
                    list: f["isList"].as_bool().expect("isList"),
                    key: f["arg"]["isKey"].as_bool().unwrap_or(false),
                    required: f["arg"]["isRequired"].as_bool().unwrap_or(false),
                    display: f["display"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
    }
}
