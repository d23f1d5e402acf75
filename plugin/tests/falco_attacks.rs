//! Attacks on what Falco sees, through the plugin driven by
//! `falco_plugin_runner` (replay of test_files/kive_attacks.jsonl: a loss
//! report, a read by a memfd binary, a read by a binary whose name forges
//! a second line): losses are events with fields a rule can match, and no
//! outside string adds a line to `%evt.plugininfo` or a field.

mod falco_common;

use std::ffi::CString;

use falco_plugin_runner::{CapturingPluginRunner, ExtractedField, PluginRunner, ScapStatus};

use falco_common::{json_str, test_file};

fn events() -> (CapturingPluginRunner, Vec<falco_plugin_runner::Event>) {
    let path = test_file("kive_attacks.jsonl");
    let cfg = format!(
        r#"{{"mode":"replay","replayFile":{}}}"#,
        json_str(path.to_str().expect("utf8"))
    );
    let mut r = PluginRunner::new();
    r.register_plugin(&kive::PLUGIN_API, &CString::new(cfg).expect("cstr"))
        .unwrap_or_else(|e| panic!("register: {e:#}"));
    let mut r = r.start_capture().unwrap_or_else(|e| panic!("open: {e:#}"));
    let mut out = Vec::new();
    loop {
        match r.next_event() {
            Ok(ev) => out.push(ev),
            Err(e) if e.downcast_ref::<ScapStatus>() == Some(&ScapStatus::Eof) => break,
            Err(e) => panic!("{e:#}"),
        }
    }
    assert_eq!(out.len(), 3, "three events in kive_attacks.jsonl");
    (r, out)
}

fn get(r: &mut CapturingPluginRunner, ev: &falco_plugin_runner::Event, f: &str) -> ExtractedField {
    r.extract_field(ev, f)
        .unwrap_or_else(|| panic!("{f} is a known field"))
        .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
}

fn text(field: ExtractedField) -> String {
    match field {
        ExtractedField::String(s) => s.to_string_lossy().into_owned(),
        other => panic!("a string, not {other:?}"),
    }
}

#[test]
fn a_loss_report_reaches_falco_as_an_event_with_loss_fields() {
    let (mut r, evs) = events();
    let loss = &evs[0];
    assert_eq!(
        get(&mut r, loss, "kive.loss.total"),
        ExtractedField::U64(4212)
    );
    assert_eq!(
        get(&mut r, loss, "kive.loss.limited"),
        ExtractedField::U64(4210)
    );
    assert_eq!(get(&mut r, loss, "kive.loss.ring"), ExtractedField::U64(2));
    assert_eq!(get(&mut r, loss, "kive.loss.queue"), ExtractedField::U64(0));
    assert_eq!(
        get(&mut r, loss, "kive.path"),
        ExtractedField::None,
        "no file was accessed"
    );
    assert_eq!(
        get(&mut r, loss, "kive.process.binary.memfd"),
        ExtractedField::None
    );
    let info = text(get(&mut r, loss, "evt.plugininfo"));
    assert_eq!(
        info, "2026-03-01T10:00:01Z loss ring=2 queue=0 limited=4210 node=kive-worker",
        "the text line of a loss report"
    );
    // an access is no loss report
    let access = &evs[1];
    assert_eq!(get(&mut r, access, "kive.loss.total"), ExtractedField::None);
}

#[test]
fn memfd_and_truncated_binaries_are_fields() {
    let (mut r, evs) = events();
    let memfd = &evs[1];
    assert_eq!(
        get(&mut r, memfd, "kive.process.binary.memfd"),
        ExtractedField::Bool(true)
    );
    assert_eq!(
        get(&mut r, memfd, "kive.process.binary.deleted"),
        ExtractedField::Bool(false)
    );
    assert_eq!(
        get(&mut r, memfd, "kive.process.binary.truncated"),
        ExtractedField::Bool(false)
    );
    assert_eq!(
        text(get(&mut r, memfd, "kive.process.flags")),
        "binary-memfd"
    );
    let cut = &evs[2];
    assert_eq!(
        get(&mut r, cut, "kive.process.binary.truncated"),
        ExtractedField::Bool(true)
    );
    assert_eq!(
        get(&mut r, cut, "kive.process.binary.memfd"),
        ExtractedField::Bool(false)
    );
    let json = text(get(&mut r, cut, "kive.alert"));
    let alert: serde_json::Value = serde_json::from_str(&json).expect("kive.alert is JSON");
    assert_eq!(
        alert["process"]["flags"],
        serde_json::json!(["binary-truncated"])
    );
}

#[test]
fn a_binary_name_with_a_newline_forges_no_line_in_plugininfo_or_fields() {
    let (mut r, evs) = events();
    let forged = &evs[2];
    let info = text(get(&mut r, forged, "evt.plugininfo"));
    assert_eq!(info.lines().count(), 1, "one line: {info:?}");
    assert!(
        info.starts_with("2026-03-01T10:00:00.5Z policy=decoys "),
        "{info}"
    );
    assert!(
        info.contains(
            r#"binary=".../x\n2030-01-01T00:00:00Z policy=forged path=/etc/hostname access=read""#
        ),
        "the name is escaped and quoted: {info}"
    );
    assert!(info.contains(r"comm=x\n2030-01-01T0 "), "{info}");
    let note = text(get(&mut r, forged, "kive.metadata[note]"));
    assert_eq!(
        note, r"set by a tenant\n2030-01-01T00:00:00Z forged",
        "metadata too"
    );
    for f in ["kive.process.binary", "kive.process.comm"] {
        let v = text(get(&mut r, forged, f));
        assert!(!v.contains('\n'), "{f} holds no newline: {v:?}");
        assert!(v.contains(r"x\n2030"), "{f} shows the escape: {v:?}");
    }
}
