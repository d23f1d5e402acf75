//! The plugin's field list as Falco reads it: the suggested output fields,
//! the numeric types, the README's generated table, and KubeArmor's rule
//! metadata reaching fields through the runner.

mod falco_common;

use std::ffi::CStr;

use falco_plugin::extract::ExtractPlugin;
use falco_plugin_runner::{CapturingPluginRunner, ExtractedField};
use kive::falco::KivePlugin;

use falco_common::runner::{next, replay, s};

#[test]
fn the_field_list_marks_suggested_output_fields() {
    let json = <KivePlugin as ExtractPlugin>::get_fields();
    let v: Vec<serde_json::Value> = serde_json::from_slice(json.to_bytes()).expect("json");
    let out: Vec<&str> = v
        .iter()
        .filter(|f| f["addOutput"].as_bool() == Some(true))
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    // a small set: Falco's append_output (suggested_output) appends these
    // to every kive rule, whose own outputs leave them out
    assert_eq!(
        out,
        [
            "kive.policy.name",
            "kive.path",
            "kive.access",
            "kive.process.pid"
        ],
        "the suggested output fields"
    );
    let num: Vec<&str> = v
        .iter()
        .filter(|f| f["type"] == "uint64")
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    for f in [
        "kive.inode",
        "kive.mask",
        "kive.process.pid",
        "kive.process.uid",
        "kive.cgroup.id",
    ] {
        assert!(num.contains(&f), "{f} is numeric: {num:?}");
    }
    let _: &CStr = json;
}

/// Replaces the text between the fields markers of `path`; false when
/// the markers are missing.
fn replace_table(path: &str, table: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return false;
    };
    let new = format!("{}{BEGIN}\n{}{}", &text[..b], table, &text[e..]);
    std::fs::write(path, new).expect("write");
    true
}

const BEGIN: &str = "<!-- fields:begin -->";
const END: &str = "<!-- fields:end -->";

/// The README's fields table is the plugin's own field list. To regenerate
/// it: `KIVE_UPDATE_FIELDS=1 cargo test -p kive
/// --test falco_field_list readme`.
#[test]
fn readme_fields_table_is_the_generated_one() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = format!("{root}/README.md");
    let want = kive::falco::fields_markdown();
    if std::env::var_os("KIVE_UPDATE_FIELDS").is_some() {
        assert!(
            replace_table(&readme, &want),
            "README.md has no fields markers"
        );
    }
    let text = std::fs::read_to_string(&readme).unwrap_or_default();
    let got = text
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table.trim().to_string());
    match got {
        Some(t) if t == want.trim() => {}
        Some(_) => panic!(
            "README.md's fields table differs from the plugin's field list (regenerate: KIVE_UPDATE_FIELDS=1 cargo test -p kive --test falco_field_list readme); it must be:\n\n{want}"
        ),
        None => panic!(
            "README.md has no {BEGIN} ... {END} section; it must hold:\n\n{want}"
        ),
    }
}

/// A KubeArmor rule's severity, tags and message reach Falco's fields and
/// the rebuilt alert.
#[test]
fn kubearmor_severity_tags_and_message_are_fields() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ka.jsonl");
    let line = serde_json::json!({
        "kive-alert-version": "v1", "kive-policy-name": "shop-secrets",
        "timestamp": "2026-12-01T08:00:00.000000000Z",
        "metadata": {"path": "/etc/shadow", "inode": 7, "mask": 36, "kernel-id": "k",
                     "callback": "", "action": "block", "owner": "host"},
        "custom-metadata": {"kubearmor-kind": "KubeArmorPolicy", "kubearmor-rule": "file.matchPaths[0]",
                            "policy-severity": "9", "policy-tags": "MITRE,T1003",
                            "policy-message": "shadow read\nforged"},
        "pod": {}, "node": {"name": "n"},
        "process": {"pid": 1, "tgid": 1, "uid": 0, "gid": 0, "binary": "/usr/bin/cat",
                    "cwd": "/", "arguments": "cat /etc/shadow"},
        "kive-policy-severity": 9, "kive-policy-tags": ["MITRE", "T1003"],
        "kive-policy-message": "shadow read\nforged"
    });
    std::fs::write(&path, format!("{line}\n")).expect("write");
    let mut r = replay(path.to_str().expect("utf8"));
    let ev = next(&mut r).expect("the alert");
    let get = |r: &mut CapturingPluginRunner, name: &str| {
        r.extract_field(&ev, name)
            .unwrap_or_else(|| panic!("{name} is a known field"))
            .unwrap_or_else(|rc| panic!("{name}: rc {rc}"))
    };
    assert_eq!(get(&mut r, "kive.policy.severity"), ExtractedField::U64(9));
    assert_eq!(get(&mut r, "kive.policy.tags"), s("MITRE,T1003"));
    assert_eq!(
        get(&mut r, "kive.policy.message"),
        s("shadow read\\nforged"),
        "a message cannot add a line to a Falco output"
    );
    let ExtractedField::String(json) = get(&mut r, "kive.alert") else {
        panic!("kive.alert is a string");
    };
    let v: serde_json::Value = serde_json::from_slice(json.as_bytes()).expect("JSON");
    assert_eq!(v["kive-policy-severity"], 9);
    assert_eq!(v["kive-policy-tags"], serde_json::json!(["MITRE", "T1003"]));
}
