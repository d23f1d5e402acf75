//! rules/kive_rules.yaml checked without a Falco binary: its structure
//! (versions, sources, priorities, every output prints fields), every
//! `kive.*` field it names exists in the plugin, and its conditions,
//! evaluated with Falco's semantics (first matching rule wins) on the
//! fields the plugin extracts from the recorded alerts in test_files/,
//! pick the expected rule.

mod falco_common;

use std::collections::BTreeMap;

use falco_plugin::extract::ExtractPlugin;
use falco_plugin_runner::{ExtractedField, ScapStatus};
use kive::falco::KivePlugin;
use serde_yaml::Value as Yaml;

use falco_common::rules::{load_rules, Eval, FieldValue};
use falco_common::runner::{register, replay};
use falco_common::test_file;

const PRIORITIES: &[&str] = &[
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "INFO",
    "DEBUG",
];

fn plugin_fields() -> BTreeMap<String, bool> {
    let json = <KivePlugin as ExtractPlugin>::get_fields();
    let v: Vec<serde_json::Value> = serde_json::from_slice(json.to_bytes()).expect("json");
    v.iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["arg"]["isRequired"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// `kive.x.y` or `kive.x[key]` references in a condition or output.
fn field_refs(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("kive.") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('.').to_string();
        let mut arg = None;
        let mut consumed = end;
        if tail[end..].starts_with('[') {
            let close = tail[end..].find(']').expect("closing ]");
            arg = Some(tail[end + 1..end + close].to_string());
            consumed = end + close + 1;
        }
        out.push((name, arg));
        rest = &tail[consumed..];
    }
    out
}

#[test]
fn rules_file_is_well_formed_for_falco() {
    let r = load_rules();
    let fields = plugin_fields();
    assert!(r.rules.len() >= 5);
    let mut versions = 0;
    for d in &r.docs {
        if let Some(v) = d.get("required_engine_version") {
            assert!(
                v.as_str().is_some_and(|s| s.split('.').count() == 3),
                "semver: {v:?}"
            );
            versions += 1;
        }
        if let Some(p) = d.get("required_plugin_versions") {
            let p = &p[0];
            assert_eq!(p["name"].as_str(), Some("kive"));
            let want: Vec<u64> = p["version"]
                .as_str()
                .expect("version")
                .split('.')
                .map(|x| x.parse().expect("number"))
                .collect();
            let have: Vec<u64> = env!("CARGO_PKG_VERSION")
                .split('.')
                .map(|x| x.parse().expect("number"))
                .collect();
            assert!(want <= have, "rules need kive {want:?}, this is {have:?}");
            versions += 1;
        }
        if d.get("rule").is_some() {
            let name = d["rule"].as_str().expect("name");
            assert_eq!(d["source"].as_str(), Some("kive"), "{name}: source");
            let prio = d["priority"].as_str().expect("priority");
            assert!(PRIORITIES.contains(&prio), "{name}: priority {prio}");
            assert!(
                d["desc"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: desc"
            );
            let output = d["output"].as_str().expect("output");
            let refs = field_refs(output);
            assert!(
                refs.len() >= 3,
                "{name}: Falcosidekick needs output fields: {output}"
            );
            assert!(output.contains("%kive."), "{name}");
            for (f, _) in field_refs(d["condition"].as_str().expect("condition"))
                .into_iter()
                .chain(refs)
            {
                assert!(fields.contains_key(&f), "{name}: unknown field {f}");
            }
        }
    }
    assert_eq!(
        versions, 2,
        "required_engine_version and required_plugin_versions"
    );
    for (name, cond) in &r.macros {
        for (f, arg) in field_refs(cond) {
            let required = *fields
                .get(&f)
                .unwrap_or_else(|| panic!("{name}: unknown field {f}"));
            assert!(!required || arg.is_some(), "{name}: {f} needs a key");
        }
    }
}

/// The rule that matches every event of a file; fails when several match
/// (the rules must give the same alerts under rule_matching: first and all).
fn matched_rules(file: &str) -> Vec<String> {
    let rules = load_rules();
    let path = test_file(file);
    let mut r = replay(path.to_str().expect("utf8"));
    let mut out = Vec::new();
    loop {
        let ev = match r.next_event() {
            Ok(ev) => ev,
            Err(e) if e.downcast_ref::<ScapStatus>() == Some(&ScapStatus::Eof) => break,
            Err(e) => panic!("{e:#}"),
        };
        let mut get = |field: &str| -> FieldValue {
            match r
                .extract_field(&ev, field)
                .expect("known field")
                .expect("extracts")
            {
                ExtractedField::None => None,
                ExtractedField::String(s) => Some(s.to_string_lossy().into_owned()),
                ExtractedField::U64(n) => Some(n.to_string()),
                ExtractedField::Bool(b) => Some(b.to_string()),
                other => panic!("{field}: {other:?} not handled by this test"),
            }
        };
        let mut ev = Eval {
            rules: &rules,
            get: &mut get,
        };
        // every rule, as under rule_matching: all; the rules are mutually
        // exclusive, so the one that matches is also the first
        let all: Vec<String> = rules
            .rules
            .iter()
            .filter(|(_, cond, _)| ev.eval(cond))
            .map(|(name, _, prio)| format!("{name} [{prio}]"))
            .collect();
        assert!(
            all.len() <= 1,
            "{file} event {}: several rules match (rule_matching: all would alert {} times): {all:?}",
            out.len() + 1,
            all.len()
        );
        out.push(all.into_iter().next().unwrap_or_else(|| "(no rule)".into()));
    }
    out
}

#[test]
fn rules_pick_the_expected_rule_for_hand_made_alerts() {
    assert_eq!(
        matched_rules("kive_alerts.jsonl"),
        [
            // the seed sample: no severity, no accessor, cat
            "Kive trap accessed [WARNING]",
            // python3 from another pod reads a critical decoy
            "Kive trap accessed from outside its owner [CRITICAL]",
            // bash writes a host decoy (blocked)
            "Kive trap written [CRITICAL]",
        ]
    );
}

#[test]
fn a_tampered_trap_is_critical_before_any_access_rule() {
    assert_eq!(
        matched_rules("kive_tamper.jsonl"),
        [
            // the rescan saw the decoy renamed (severity low: still critical)
            "Kive trap tampered [CRITICAL]",
            // cat of the moved decoy: an ordinary access of the trap
            "Kive trap accessed (low) [NOTICE]",
        ]
    );
}

#[test]
fn rules_pick_the_expected_rule_for_recorded_engine_alerts() {
    assert_eq!(
        matched_rules("kive_run_host.jsonl"),
        [
            "Kive trap accessed (high) [ERROR]", // cat
            "Kive trap accessed (high) [ERROR]", // head
            "Kive trap read by a shell [ERROR]", // sh: read x < file
            "Kive trap read by a shell [ERROR]", // bash: cat < file (bash opens it)
            "Kive trap written [CRITICAL]",      // echo >> file
            "Kive trap accessed (high) [ERROR]", // python3
        ]
    );
}

#[test]
fn rules_catch_loss_reports_and_fileless_binaries() {
    assert_eq!(
        matched_rules("kive_attacks.jsonl"),
        [
            // a loss report is an event of its own, no trap hit
            "Kive trap hits lost [ERROR]",
            // a memfd binary reads a decoy
            "Kive trap accessed by a fileless binary [CRITICAL]",
            // a truncated binary name (forging a line) reads a decoy
            "Kive trap accessed [WARNING]",
        ]
    );
}

#[test]
fn policy_rule_hits_match_one_rule_by_severity_after_the_specific_ones() {
    assert_eq!(
        matched_rules("kive_policy_rules.jsonl"),
        [
            // a KubeArmor rule of severity 8: cat reads a pod's secret
            "Kive policy rule hit (severity 7-10) [CRITICAL]",
            // severity 3
            "Kive policy rule hit [WARNING]",
            // severity 9, but a write: the specific rule
            "Kive trap written [CRITICAL]",
            // severity 5, read by a shell: the specific rule
            "Kive trap read by a shell [ERROR]",
        ]
    );
}

/// Falco's append_output (suggested_output: true) appends the fields the
/// plugin marks addOutput to every kive rule: a rule printing one of them
/// itself would print it twice.
#[test]
fn rule_outputs_leave_the_suggested_fields_to_append_output() {
    let json = <KivePlugin as ExtractPlugin>::get_fields();
    let v: Vec<serde_json::Value> = serde_json::from_slice(json.to_bytes()).expect("json");
    let suggested: Vec<&str> = v
        .iter()
        .filter(|f| f["addOutput"].as_bool().unwrap_or(false))
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(suggested.contains(&"kive.path"), "{suggested:?}");
    let r = load_rules();
    for d in &r.docs {
        let Some(name) = d.get("rule").and_then(Yaml::as_str) else {
            continue;
        };
        let output = d["output"].as_str().expect("output");
        for (f, _) in field_refs(output) {
            assert!(
                !suggested.contains(&f.as_str()),
                "{name}: prints {f}, which append_output adds: {output}"
            );
        }
    }
}

#[test]
fn falco_yaml_loads_kive_with_a_valid_init_config() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{root}/falco.yaml")).expect("falco.yaml");
    let cfg: Yaml = serde_yaml::from_str(&text).expect("falco.yaml is YAML");
    assert_eq!(cfg["engine"]["kind"].as_str(), Some("nodriver"));
    let loads: Vec<&str> = cfg["load_plugins"]
        .as_sequence()
        .expect("load_plugins")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(loads, ["kive"]);
    let plugin = &cfg["plugins"][0];
    assert_eq!(plugin["name"].as_str(), Some("kive"));
    assert!(plugin["library_path"]
        .as_str()
        .is_some_and(|p| p.ends_with("libkive.so")));
    for rules in cfg["rules_files"].as_sequence().expect("rules_files") {
        let p = format!("{root}/{}", rules.as_str().expect("path"));
        assert!(std::path::Path::new(&p).exists(), "{p}");
    }
    // Falco turns a YAML init_config into JSON for the plugin
    let init = serde_json::to_string(&plugin["init_config"]).expect("json");
    let parsed = kive::falco::KiveConfig::from_json(&init)
        .unwrap_or_else(|e| panic!("falco.yaml's init_config: {e}"));
    for f in &parsed.policy_files {
        let p = format!("{root}/{f}");
        let c = kive::policy::load_str(&p, &std::fs::read_to_string(&p).expect("policy file"));
        assert!(
            c.errors.is_empty() && !c.traps.is_empty(),
            "{p}: {:?}",
            c.errors
        );
    }
    register(&init).expect("the plugin accepts falco.yaml's init_config");
}

/// rules/kive_syscall_rules.yaml: rules of the syscall source on the async
/// event the plugin declares, restricted to async events the way Falco
/// indexes rules (evt.type of an async event is its name, which is no
/// event code: `asyncevent` must be in the list too), on kive fields that
/// exist, with the same version requirements as kive_rules.yaml.
#[test]
fn syscall_rules_match_the_plugins_async_event() {
    use falco_plugin::async_event::AsyncEventPlugin;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/kive_syscall_rules.yaml"
    );
    let text = std::fs::read_to_string(path).expect("rules/kive_syscall_rules.yaml");
    let docs: Vec<Yaml> = serde_yaml::from_str(&text).expect("syscall rules file is YAML");
    let [name] = KivePlugin::ASYNC_EVENTS else {
        panic!("one async event: {:?}", KivePlugin::ASYNC_EVENTS)
    };
    let want = format!("(evt.type in (asyncevent, {name}) and evt.asynctype = {name})");
    let fields = plugin_fields();
    let main = load_rules();
    let (mut rules, mut async_macro) = (0, false);
    for d in &docs {
        for key in ["required_engine_version", "required_plugin_versions"] {
            if let Some(v) = d.get(key) {
                let same = main.docs.iter().find_map(|m| m.get(key));
                assert_eq!(Some(v), same, "{key} differs from kive_rules.yaml");
            }
        }
        let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        if d.get("macro").and_then(Yaml::as_str) == Some("kive_async_alert") {
            assert_eq!(text("condition"), want, "kive_async_alert");
            async_macro = true;
        }
        if let Some(rule) = d.get("rule").and_then(Yaml::as_str) {
            rules += 1;
            assert_eq!(d["source"].as_str(), Some("syscall"), "{rule}: source");
            assert!(
                text("condition").contains("kive_syscall_trap_hit"),
                "{rule}: not restricted to kive's async events"
            );
            for (f, _) in field_refs(&text("condition"))
                .into_iter()
                .chain(field_refs(&text("output")))
            {
                assert!(fields.contains_key(&f), "{rule}: unknown field {f}");
            }
            assert!(text("output").contains("%thread.tid"), "{rule}: thread id");
        }
    }
    assert!(async_macro, "no kive_async_alert macro");
    assert!(rules >= 2, "{rules} rules");
    let hit = docs
        .iter()
        .find(|d| d.get("macro").and_then(Yaml::as_str) == Some("kive_syscall_trap_hit"))
        .expect("kive_syscall_trap_hit macro");
    assert!(hit["condition"]
        .as_str()
        .is_some_and(|c| c.contains("kive_async_alert")));
}
