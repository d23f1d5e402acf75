//! The async event capability through the real plugin ABI
//! (`falco_plugin_runner` drives the built plugin's C API table): with
//! `asyncEvents` each alert is also injected as an async event
//! (`kive_alert`, type 402) carrying the accessing thread's id, and the
//! `kive.*` fields extract from it; without it nothing is injected; the
//! extraction declares the `syscall` source and the async event type.

mod falco_common;

use std::ffi::CString;

use falco_plugin_runner::{CapturingPluginRunner, ExtractedField, PluginRunner, ScapStatus};

use falco_common::{json_str, test_file};

const PLUGIN_EVENT: u16 = 322;
const ASYNC_EVENT: u16 = 402;

fn capture(async_events: bool) -> CapturingPluginRunner {
    let path = test_file("kive_alerts.jsonl");
    let cfg = format!(
        r#"{{"mode":"replay","replayFile":{},"asyncEvents":{async_events}}}"#,
        json_str(path.to_str().expect("utf8"))
    );
    let mut r = PluginRunner::new();
    r.register_plugin(&kive::PLUGIN_API, &CString::new(cfg).expect("no NUL"))
        .unwrap_or_else(|e| panic!("registers: {e:#}"));
    r.start_capture()
        .unwrap_or_else(|e| panic!("replay opens: {e:#}"))
}

/// (event type, thread id, kive.path, kive.process.pid) of every event
/// until the end of the replay.
fn drain(r: &mut CapturingPluginRunner) -> Vec<(u16, i64, String, String)> {
    let mut out = Vec::new();
    loop {
        let ev = match r.next_event() {
            Ok(ev) => ev,
            Err(e) if e.downcast_ref::<ScapStatus>() == Some(&ScapStatus::Eof) => break,
            Err(e) if e.downcast_ref::<ScapStatus>() == Some(&ScapStatus::Timeout) => continue,
            Err(e) => panic!("next_event: {e:#}"),
        };
        // SAFETY: the runner's event buffer is a valid ss_plugin_event
        // until the next call of next_event.
        let (ty, tid) = unsafe { ((*ev.buf).type_, (*ev.buf).tid as i64) };
        let mut get = |f: &str| match r
            .extract_field(&ev, f)
            .unwrap_or_else(|| panic!("{f} is a known field"))
            .unwrap_or_else(|rc| panic!("{f} on event type {ty}: rc {rc}"))
        {
            ExtractedField::String(s) => s.to_string_lossy().into_owned(),
            ExtractedField::U64(n) => n.to_string(),
            ExtractedField::None => "<NA>".into(),
            other => panic!("{f}: {other:?}"),
        };
        let path = get("kive.path");
        let pid = get("kive.process.pid");
        out.push((ty, tid, path, pid));
    }
    out
}

fn expected_alerts() -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(test_file("kive_alerts.jsonl")).expect("test file");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["metadata"]["path"].as_str().expect("path").to_string(),
                v["process"]["pid"].as_i64().expect("pid"),
            )
        })
        .collect()
}

#[test]
fn with_async_events_every_alert_is_also_an_async_event_with_the_thread_id() {
    let mut r = capture(true);
    let events = drain(&mut r);
    let want = expected_alerts();
    let plugin: Vec<_> = events.iter().filter(|e| e.0 == PLUGIN_EVENT).collect();
    let asyncs: Vec<_> = events.iter().filter(|e| e.0 == ASYNC_EVENT).collect();
    assert_eq!(
        plugin.len(),
        want.len(),
        "one plugin event per alert: {events:?}"
    );
    assert_eq!(
        asyncs.len(),
        want.len(),
        "one async event per alert: {events:?}"
    );
    for ((_, tid, path, pid), (want_path, want_pid)) in asyncs.iter().zip(&want) {
        assert_eq!(path, want_path, "kive.path extracts from the async event");
        assert_eq!(
            *tid, *want_pid,
            "the async event's thread is the accessing thread"
        );
        assert_eq!(
            pid,
            &want_pid.to_string(),
            "kive.process.pid on the async event"
        );
    }
    let injected = r
        .get_metrics()
        .into_iter()
        .find(|m| m.name.ends_with("async_events_injected"))
        .map(|m| format!("{:?}", m.value))
        .expect("async_events_injected metric");
    assert_eq!(
        injected,
        format!("{:?}", falco_plugin_runner::MetricValue::U64(3))
    );
}

#[test]
fn without_async_events_nothing_is_injected() {
    let mut r = capture(false);
    let events = drain(&mut r);
    assert!(
        events.iter().all(|e| e.0 == PLUGIN_EVENT),
        "no async event unless asyncEvents: {events:?}"
    );
    assert_eq!(events.len(), expected_alerts().len());
}

#[test]
fn the_plugin_declares_the_async_event_and_the_syscall_source() {
    let api = &kive::PLUGIN_API;
    // SAFETY: the plugin's static capability getters take no arguments and
    // return static NUL-terminated JSON.
    let (names, sources, extract_sources) = unsafe {
        let a = &api.__bindgen_anon_4;
        let e = &api.__bindgen_anon_2;
        let s =
            |p: *const std::ffi::c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        (
            s(a.get_async_events.expect("async capability")()),
            s(a.get_async_event_sources.expect("async sources")()),
            s(e.get_extract_event_sources.expect("extract sources")()),
        )
    };
    assert_eq!(names, r#"["kive_alert"]"#);
    assert_eq!(sources, r#"["syscall"]"#);
    let v: Vec<String> = serde_json::from_str(&extract_sources).expect("json");
    assert!(
        v.contains(&"kive".to_string()) && v.contains(&"syscall".to_string()),
        "kive.* fields extract on kive and syscall events: {v:?}"
    );
}
