//! The field table as Markdown (checked against the README's).

use falco_plugin::extract::ExtractPlugin;

use crate::falco::KivePlugin;

/// The supported fields as a Markdown table (NAME | TYPE | ARG |
/// DESCRIPTION), generated from the field list the plugin gives Falco.
pub fn fields_markdown() -> String {
    let json = <KivePlugin as ExtractPlugin>::get_fields();
    let fields: Vec<serde_json::Value> =
        serde_json::from_slice(json.to_bytes()).expect("the plugin's field list is JSON");
    let mut out =
        String::from("| NAME | TYPE | ARG | DESCRIPTION |\n|------|------|-----|-------------|\n");
    for f in fields {
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        let mut ty = format!("`{}`", s("type"));
        if f["isList"].as_bool().unwrap_or(false) {
            ty.push_str(" (list)");
        }
        let arg = &f["arg"];
        let flag = |k: &str| arg[k].as_bool().unwrap_or(false);
        let arg = if arg.is_null() {
            "None".to_string()
        } else {
            let kind = if flag("isKey") { "Key" } else { "Index" };
            let req = if flag("isRequired") {
                "Required"
            } else {
                "Optional"
            };
            format!("{kind}, {req}")
        };
        let mut desc = s("desc").replace('|', "\\|");
        if f["addOutput"].as_bool().unwrap_or(false) {
            desc.push_str(" (suggested output)");
        }
        out.push_str(&format!("| `{}` | {ty} | {arg} | {desc} |\n", s("name")));
    }
    out
}
