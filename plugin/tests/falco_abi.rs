//! The built `libkive.so`, loaded with dlopen and called through its
//! `plugin_*` C symbols, checked against what libscap/libsinsp require
//! and `falco_plugin_runner` does not check: a successful `next_batch`
//! carries at least one event; every event is PPME_PLUGINEVENT_E (322)
//! with 2 parameters and our plugin id; the required API version; the init
//! schema is JSON. Replay mode: no root needed.

mod falco_common;

use std::collections::BTreeSet;
use std::ffi::c_char;

use falco_common::{json_str, string, test_file, Fields, OwnedEvent, Plugin, So, Value};
use falco_plugin::api::{
    ss_plugin_rc_SS_PLUGIN_EOF, ss_plugin_rc_SS_PLUGIN_FAILURE, ss_plugin_rc_SS_PLUGIN_SUCCESS,
    ss_plugin_schema_type_SS_PLUGIN_SCHEMA_JSON, PLUGIN_API_VERSION_MAJOR,
    PLUGIN_API_VERSION_MINOR,
};

const PPME_PLUGINEVENT_E: u16 = 322;

fn replay_config(path: &std::path::Path) -> String {
    format!(
        r#"{{"mode":"replay","replayFile":{}}}"#,
        json_str(path.to_str().expect("utf8"))
    )
}

/// Every event until EOF, checking each batch like libscap does.
fn drain(inst: &falco_common::Instance<'_>) -> Vec<OwnedEvent> {
    let mut all = Vec::new();
    loop {
        let (rc, evts) = inst.next_batch();
        if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS {
            assert!(
                !evts.is_empty(),
                "next_batch succeeded with 0 events (fatal in Falco)"
            );
            all.extend(evts);
        } else if rc == ss_plugin_rc_SS_PLUGIN_EOF {
            assert!(evts.is_empty());
            return all;
        } else {
            panic!("next_batch rc {rc}: {}", inst.plugin.last_error());
        }
    }
}

fn check_event(e: &OwnedEvent) {
    assert_eq!(e.event_type(), PPME_PLUGINEVENT_E, "event type");
    assert_eq!(e.nparams(), 2, "PLUGINEVENT_E has plugin id + data");
    assert_eq!(e.param_len(0), 4, "plugin id is a u32");
    assert_eq!(e.plugin_id(), 999, "our plugin id");
    let len = u32::from_ne_bytes(e.0[16..20].try_into().expect("4")) as usize;
    assert_eq!(len, e.0.len(), "header length");
    assert_eq!(len, 26 + 8 + 4 + e.param_len(1) as usize, "lengths add up");
    assert_eq!(e.data()[0], kive::falco::payload::MAGIC, "kive payload");
    assert_eq!(e.data()[1], kive::falco::payload::PAYLOAD_VERSION);
}

#[test]
fn metadata_symbols_and_api_version() {
    let so = So::get();
    // SAFETY: static strings from the plugin.
    unsafe {
        assert_eq!(string((so.get_required_api_version)()), "3.11.0");
        assert_eq!(
            string((so.get_required_api_version)()),
            format!("{PLUGIN_API_VERSION_MAJOR}.{PLUGIN_API_VERSION_MINOR}.0"),
            "what falco_plugin 0.5.1 declares"
        );
        assert_eq!(string((so.get_name)()), "kive");
        assert_eq!(string((so.get_version)()), env!("CARGO_PKG_VERSION"));
        assert!(!string((so.get_description)()).is_empty());
        assert!(!string((so.get_contact)()).is_empty());
        assert_eq!((so.get_id)(), 999);
        assert_eq!(string((so.get_event_source)()), "kive");
        let sources: Vec<String> =
            serde_json::from_str(&string((so.get_extract_event_sources)())).expect("json");
        // kive's own events and its async events in the syscall source
        assert_eq!(sources, ["kive", "syscall"]);
        let mut n = 0u32;
        let types = (so.get_extract_event_types)(&mut n, std::ptr::null_mut());
        assert_eq!(
            std::slice::from_raw_parts(types, n as usize),
            [PPME_PLUGINEVENT_E, 402]
        );
    }
}

#[test]
fn init_schema_is_json_and_matches_the_config() {
    let so = So::get();
    let mut ty = 0u32;
    // SAFETY: valid out pointer.
    let schema = string(unsafe { (so.get_init_schema)(&mut ty) });
    assert_eq!(ty, ss_plugin_schema_type_SS_PLUGIN_SCHEMA_JSON);
    let v: serde_json::Value =
        serde_json::from_str(&schema).expect("the init schema parses as JSON");
    assert_eq!(v["type"], "object");
    assert_eq!(v["additionalProperties"], false);
    for key in [
        "mode",
        "replayFile",
        "policyFiles",
        "policies",
        "tier",
        "ringBytes",
        "nodeName",
    ] {
        assert!(
            v["properties"][key]["description"].is_string(),
            "{key} documented"
        );
    }
    assert_eq!(
        v,
        serde_json::from_str::<serde_json::Value>(&kive::falco::KiveConfig::schema_json())
            .expect("json")
    );
}

#[test]
fn field_list_parses_and_every_field_is_kive() {
    let fields = Fields::get();
    assert!(fields.len() >= 30);
    let names: BTreeSet<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), fields.len(), "unique names");
    for f in fields {
        assert!(f.name.starts_with("kive."), "{}", f.name);
        assert!(!f.display.is_empty(), "{} has a display name", f.name);
        assert!(
            ["string", "uint64", "bool"].contains(&f.ty.as_str()),
            "{}: {}",
            f.name,
            f.ty
        );
    }
}

#[test]
fn bad_init_config_fails_with_the_reason_in_last_error() {
    let e = Plugin::init(r#"{"ringBytes":1000}"#)
        .err()
        .expect("rejected");
    assert!(e.contains("ringBytes"), "{e}");
    let e = Plugin::init(r#"{"tier":"kprobe"}"#)
        .err()
        .expect("rejected");
    assert!(e.contains("kprobe"), "{e}");
}

#[test]
fn a_deprecated_init_config_key_loads_and_an_unknown_one_does_not() {
    Plugin::init(r#"{"queueSize":128}"#).expect("a deprecated key is accepted");
    let e = Plugin::init(r#"{"queueSize":128,"queueSise":1}"#)
        .err()
        .expect("an unknown key is rejected");
    assert!(e.contains("unknown field `queueSise`"), "{e}");
    let mut schema: u32 = 0;
    // SAFETY: a static string and a valid out pointer.
    let s = string(unsafe { (So::get().get_init_schema)(&mut schema) });
    let s: serde_json::Value = serde_json::from_str(&s).expect("schema JSON");
    assert_eq!(s["properties"]["queueSize"]["deprecated"], true, "{s:#}");
}

#[test]
fn replay_batches_are_valid_plugin_events() {
    let path = test_file("kive_alerts.jsonl");
    let p = Plugin::init(&replay_config(&path)).expect("init");
    let inst = p.open(None).expect("open");
    let evts = drain(&inst);
    assert_eq!(evts.len(), 3, "three lines");
    for e in &evts {
        check_event(e);
    }
    assert_eq!(evts[0].ts(), 1_754_153_479_000_000_000);
    assert_eq!(evts[1].ts(), 1_754_153_479_123_456_789);
    assert_eq!(p.metric("events_delivered"), 3);

    // fields through the C ABI, one field per call as libsinsp does
    let e = &evts[2];
    assert_eq!(
        p.extract(e.as_ptr(), "kive.policy.name"),
        Ok(Value::s("host-decoy"))
    );
    assert_eq!(p.extract(e.as_ptr(), "kive.access"), Ok(Value::s("write")));
    assert_eq!(p.extract(e.as_ptr(), "kive.action"), Ok(Value::s("block")));
    assert_eq!(p.extract(e.as_ptr(), "kive.mask"), Ok(Value::U64(34)));
    assert_eq!(
        p.extract(e.as_ptr(), "kive.process.comm"),
        Ok(Value::s("bash"))
    );
    assert_eq!(p.extract(e.as_ptr(), "kive.pod.name"), Ok(Value::None));
    assert_eq!(
        p.extract(e.as_ptr(), "kive.metadata[severity]"),
        Ok(Value::s("high"))
    );
    assert_eq!(
        p.extract(evts[1].as_ptr(), "kive.pod.labels"),
        Ok(Value::List(vec![
            Value::s("app=payments"),
            Value::s("tier=backend")
        ]))
    );
    assert_eq!(
        p.extract(evts[1].as_ptr(), "kive.pod.label[app]"),
        Ok(Value::s("payments"))
    );
    // a required key that is missing: the SDK refuses, the plugin survives
    assert_eq!(
        p.extract(e.as_ptr(), "kive.pod.label"),
        Err(ss_plugin_rc_SS_PLUGIN_FAILURE)
    );
    assert_eq!(
        p.extract(e.as_ptr(), "kive.path"),
        Ok(Value::s("/tmp/kive-secret.txt"))
    );
    assert_eq!(
        p.extract(e.as_ptr(), "kive.accessor.host"),
        Ok(Value::Bool(true))
    );
    assert_eq!(
        p.extract(e.as_ptr(), "kive.accessor.foreign"),
        Ok(Value::Bool(false))
    );
    assert_eq!(
        p.extract(evts[1].as_ptr(), "kive.accessor.foreign"),
        Ok(Value::Bool(true))
    );
    assert_eq!(
        p.extract(evts[0].as_ptr(), "kive.accessor.foreign"),
        Ok(Value::None)
    );
    let text = p.event_to_string(e.as_ptr());
    assert!(
        text.contains("policy=host-decoy") && text.contains("action=block"),
        "{text}"
    );
}

#[test]
fn open_params_path_replays_that_file() {
    // init_config says live (the default) and names no policy: the path in
    // open_params selects replay, as in the k8sadmission plugin
    let p = Plugin::init("{}").expect("init");
    let path = test_file("kive_run_host.jsonl");
    let inst = p
        .open(Some(path.to_str().expect("utf8")))
        .expect("open a path");
    let evts = drain(&inst);
    assert_eq!(evts.len(), 6);
    let comms: Vec<Value> = evts
        .iter()
        .map(|e| {
            check_event(e);
            p.extract(e.as_ptr(), "kive.process.comm").expect("comm")
        })
        .collect();
    assert_eq!(comms[0], Value::s("cat"));
    assert_eq!(comms[5], Value::s("python3"));
    drop(inst);
    let e = p.open(None).err().expect("live without policies");
    assert!(e.contains("live mode needs policies"), "{e}");
    let e = p
        .open(Some("/nonexistent/x.jsonl"))
        .err()
        .expect("missing file");
    assert!(e.contains("/nonexistent/x.jsonl"), "{e}");
}

#[test]
fn mode_replay_takes_its_file_from_open_params_when_replay_file_is_absent() {
    let p = Plugin::init(r#"{"mode":"replay"}"#).expect("init accepts it");
    let e = p.open(None).err().expect("no file anywhere");
    assert!(e.contains("replayFile"), "{e}");
    let path = test_file("kive_run_host.jsonl");
    let inst = p
        .open(Some(path.to_str().expect("utf8")))
        .expect("the open_params path is the file");
    assert_eq!(drain(&inst).len(), 6);
}

#[test]
fn open_params_are_listed_as_json() {
    let p = Plugin::init("{}").expect("init");
    let mut rc = 0;
    // SAFETY: valid plugin and rc pointer.
    let s = string(unsafe { (p.so.list_open_params)(p.ptr, &mut rc) } as *const c_char);
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .any(|p| p["value"] == "live"),
        "{v}"
    );
    // Falco refuses the whole list (--plugin-info fails) for an entry
    // without a value
    for e in v.as_array().expect("array") {
        assert!(
            e["value"].as_str().is_some_and(|s| !s.is_empty()),
            "open_params entry without a value: {e} in {v}"
        );
    }
}

#[test]
fn open_close_cycles_in_replay_reuse_one_plugin() {
    let p = Plugin::init(&replay_config(&test_file("kive_alerts.jsonl"))).expect("init");
    for _ in 0..20 {
        let inst = p.open(None).expect("open");
        assert_eq!(drain(&inst).len(), 3);
    }
    assert_eq!(p.metric("events_delivered"), 60);
}

/// libsinsp caches the pointers of a field's first extraction for an event
/// (a shallow copy) and reads them again when the field appears a second
/// time in a rule, after other fields of the same event were extracted:
/// each value must stay valid and unchanged until the next event, not only
/// until the next `plugin_extract_fields` call (kive_policy_rules.jsonl
/// gave no alert in a real Falco when it did not).
#[test]
fn extracted_values_stay_valid_until_the_next_event() {
    let path = test_file("kive_policy_rules.jsonl");
    let p = Plugin::init(&replay_config(&path)).expect("init");
    let inst = p.open(None).expect("open");
    let evts = drain(&inst);
    let evt = evts.first().expect("an event").as_ptr();
    let src = c"kive";
    let (path_req, _) = p.extract_raw(evt, 7, "kive.path", src).expect("kive.path");
    let (pid_req, _) = p
        .extract_raw(evt, 7, "kive.process.pid", src)
        .expect("kive.process.pid");
    assert_eq!(path_req.res_len, 1, "one kive.path");
    assert_eq!(pid_req.res_len, 1, "one kive.process.pid");
    // SAFETY: one string and one u64, as the plugin returned them.
    let (path_str, pid_val) = unsafe { (*path_req.res.str_, pid_req.res.u64_) };
    // the rest of a rule and its output, for the same event: strings of
    // every size (the whole alert is the largest), numbers, lists
    for f in [
        "kive.process.comm",
        "kive.alert",
        "kive.policy.tags",
        "kive.process.tgid",
        "kive.pod.labels",
        "kive.access",
        "kive.alert",
    ] {
        p.extract_raw(evt, 7, f, src)
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"));
    }
    // SAFETY: what the plugin returned for this event (the contract under
    // test: still valid while the event is the same).
    let (path, pid) = unsafe { (string(path_str), std::ptr::read_unaligned(pid_val)) };
    assert_eq!(
        path, "/secret.txt",
        "kive.path read back after other fields of the same event"
    );
    assert_eq!(
        pid, 176928,
        "kive.process.pid read back after other fields of the same event"
    );
}
