//! The plugin driven in-process through `falco_plugin_runner`, as Falco
//! drives it: register, start capture, next event, extract, metrics.

use std::collections::BTreeMap;
use std::ffi::CString;

use falco_plugin::extract::ExtractPlugin;
use falco_plugin_runner::{
    CapturingPluginRunner, Event, ExtractedField, MetricValue, PluginRunner, ScapStatus,
};
use kive::falco::KivePlugin;

use super::json_str;

pub fn register(config: &str) -> anyhow::Result<PluginRunner> {
    let mut r = PluginRunner::new();
    let c = CString::new(config).expect("no NUL");
    r.register_plugin(&kive::PLUGIN_API, &c)?;
    Ok(r)
}

pub fn replay(path: &str) -> CapturingPluginRunner {
    let cfg = format!(r#"{{"mode":"replay","replayFile":{}}}"#, json_str(path));
    register(&cfg)
        .unwrap_or_else(|e| panic!("replay config registers: {e:#}"))
        .start_capture()
        .unwrap_or_else(|e| panic!("replay opens: {e:#}"))
}

pub fn s(v: &str) -> ExtractedField {
    ExtractedField::String(CString::new(v).expect("no NUL"))
}

pub fn list(v: &[&str]) -> ExtractedField {
    match v {
        // the runner reports a one-element list like a scalar
        [one] => s(one),
        _ => ExtractedField::Vec(v.iter().map(|x| s(x)).collect()),
    }
}

pub fn field_names() -> Vec<String> {
    let json = <KivePlugin as ExtractPlugin>::get_fields();
    let v: Vec<serde_json::Value> = serde_json::from_slice(json.to_bytes()).expect("json");
    v.iter()
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect()
}

pub fn metrics(r: &mut CapturingPluginRunner) -> BTreeMap<String, u64> {
    r.get_metrics()
        .into_iter()
        .map(|m| {
            let v = match m.value {
                MetricValue::U64(v) => v,
                other => panic!("{}: {other:?} is not u64", m.name),
            };
            (m.name, v)
        })
        .collect()
}

pub fn is_status(e: &anyhow::Error, want: ScapStatus) -> bool {
    e.downcast_ref::<ScapStatus>() == Some(&want)
}

/// The next event as Falco gets it: a batch that timed out (the replay
/// read-ahead thread had nothing ready yet, e.g. on a loaded machine) is asked
/// again, as Falco does; any other status is returned.
pub fn next(r: &mut CapturingPluginRunner) -> anyhow::Result<Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match r.next_event() {
            Err(e)
                if is_status(&e, ScapStatus::Timeout) && std::time::Instant::now() < deadline => {}
            got => return got,
        }
    }
}
