//! The direct extraction against the SDK's, and its per-event memory
//! attacked (a new event at the same address, another plugin instance).

use std::ffi::{CStr, CString};

use falco_plugin::api::{
    ss_plugin_event, ss_plugin_extract_field__bindgen_ty_1, ss_plugin_field_type_FTYPE_STRING,
    ss_plugin_field_type_FTYPE_UINT64, ss_plugin_init_input, ss_plugin_rc,
    ss_plugin_rc_SS_PLUGIN_FAILURE, ss_plugin_table_reader_vtable_ext,
};
use falco_plugin::event::events::{EventMetadata, EventToBytes};
use falco_plugin::internals::extract::wrappers;
use falco_plugin::source::PluginEvent;

use super::*;
use crate::alert::KiveAlert;
use crate::falco::payload::tests::full_alert;
use crate::falco::payload::{encode, KivePayload};
use crate::falco::{KivePlugin, PLUGIN_ID};

/// The owner's last error (no owner here: empty).
extern "C-unwind" fn owner_last_error(
    _o: *mut falco_plugin::api::ss_plugin_owner_t,
) -> *const std::ffi::c_char {
    c"".as_ptr()
}

/// A plugin instance made through the C API (destroyed on drop).
struct Plugin(*mut ss_plugin_t);

impl Plugin {
    fn new() -> Self {
        let cfg = CString::new(concat!(
            r#"{"mode":"replay","replayFile":""#,
            env!("CARGO_MANIFEST_DIR"),
            r#"/../test_files/kive_alerts.jsonl"}"#
        ))
        .expect("no NUL");
        let input = ss_plugin_init_input {
            config: cfg.as_ptr(),
            owner: ptr::null_mut(),
            get_owner_last_error: Some(owner_last_error),
            tables: ptr::null(),
            log_fn: None,
        };
        let mut rc: ss_plugin_rc = 0;
        let init = crate::PLUGIN_API.init.expect("init");
        // SAFETY: a valid input and rc, as libscap passes them.
        let p = unsafe { init(&input, &mut rc) };
        assert!(!p.is_null(), "init returns a handle");
        if rc != 0 {
            let last = crate::PLUGIN_API.get_last_error.expect("get_last_error");
            // SAFETY: a handle from init; the error is a C string it owns.
            let e = unsafe { CStr::from_ptr(last(p)) }
                .to_string_lossy()
                .into_owned();
            panic!("plugin init failed: rc {rc}: {e}");
        }
        Plugin(p)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let destroy = crate::PLUGIN_API.destroy.expect("destroy");
        // SAFETY: made by init, destroyed once.
        unsafe { destroy(self.0) }
    }
}

/// A value as read back from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    None,
    Str(Vec<u8>),
    U64(u64),
}

/// The plugin event carrying `a`'s payload.
fn event(a: &KiveAlert) -> Vec<u8> {
    let mut payload = Vec::new();
    encode(a, &mut payload).expect("encode");
    let e = Event {
        metadata: EventMetadata { ts: 1, tid: -1 },
        params: PluginEvent {
            plugin_id: PLUGIN_ID,
            event_data: KivePayload(&payload),
        },
    };
    let mut out = Vec::new();
    e.write(&mut out).expect("write");
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// [`extract`] itself (asserted to take the call).
    Direct,
    /// The SDK's `plugin_extract_fields` (no copy kept).
    Sdk,
    /// The exported `plugin_extract_fields`.
    Ffi,
}

/// One field of `evt` (event number `evtnum`) extracted by `path`.
fn extract_one(p: &Plugin, evt: &[u8], evtnum: u64, id: usize, path: Path) -> Value {
    // SAFETY: read right after the call.
    unsafe { value(id, &extract_req(p, evt, evtnum, id, path)) }
}

/// The request of one field of `evt` (event number `evtnum`) after its
/// extraction by `path` (succeeded).
fn extract_req(
    p: &Plugin,
    evt: &[u8],
    evtnum: u64,
    id: usize,
    path: Path,
) -> ss_plugin_extract_field {
    let info = &FIELDS[id];
    let name = CString::new(info.name).expect("no NUL");
    let mut req = ss_plugin_extract_field {
        res: ss_plugin_extract_field__bindgen_ty_1 {
            u64_: ptr::null_mut(),
        },
        res_len: 0,
        field_id: id as u32,
        field: name.as_ptr(),
        arg_key: ptr::null(),
        arg_index: 0,
        arg_present: 0,
        ftype: info.field_type as u32,
        flist: info.is_list as u32,
    };
    // SAFETY: a table of Option<fn> is valid when zeroed (all None).
    let mut reader_ext: ss_plugin_table_reader_vtable_ext = unsafe { std::mem::zeroed() };
    let input = ss_plugin_field_extract_input {
        owner: ptr::null_mut(),
        get_owner_last_error: None,
        num_fields: 1,
        fields: &mut req,
        // SAFETY: as above, an all-None vtable.
        table_reader: unsafe { std::mem::zeroed() },
        table_reader_ext: &mut reader_ext,
        value_offsets: ptr::null_mut(),
    };
    let ev_in = ss_plugin_event_input {
        evt: evt.as_ptr().cast::<ss_plugin_event>(),
        evtnum,
        evtsrc: c"kive".as_ptr(),
    };
    // SAFETY: a live plugin, a valid event and input, as libsinsp passes them.
    let rc = unsafe {
        match path {
            Path::Direct => extract(p.0, &ev_in, &input).expect("a direct field"),
            Path::Sdk => wrappers::plugin_extract_fields::<KivePlugin>(p.0, &ev_in, &input),
            Path::Ffi => crate::ffi::plugin_extract_fields(p.0, &ev_in, &input),
        }
    };
    assert_eq!(rc, ss_plugin_rc_SS_PLUGIN_SUCCESS, "{}: rc", info.name);
    req
}

/// The value a request of field `id` points at.
///
/// # Safety
/// The request's values are still valid (kept until the next event of
/// its plugin instance).
unsafe fn value(id: usize, req: &ss_plugin_extract_field) -> Value {
    let info = &FIELDS[id];
    if req.res_len == 0 {
        return Value::None;
    }
    assert_eq!(req.res_len, 1, "{}: one value", info.name);
    // SAFETY: on success, one value of the field's type, valid until the
    // next call at least.
    unsafe {
        #[allow(non_upper_case_globals)]
        match info.field_type as u32 {
            ss_plugin_field_type_FTYPE_UINT64 => Value::U64(ptr::read_unaligned(req.res.u64_)),
            ss_plugin_field_type_FTYPE_STRING => {
                Value::Str(CStr::from_ptr(*req.res.str_).to_bytes().to_vec())
            }
            t => panic!("{}: no direct field of type {t}", info.name),
        }
    }
}

/// Alerts that take every branch: every slot set, text to escape, most
/// slots empty.
fn alerts() -> Vec<KiveAlert> {
    let full = full_alert();
    let mut odd = full_alert();
    odd.process.comm = "x\n\tbad".into();
    odd.metadata.path = "/tmp/a\\b \u{202e}rtl caf\u{e9}".into();
    odd.pod.container.name = "\u{1b}[31mred".into();
    odd.metadata.mask = 0;
    odd.process.ppid = None;
    odd.metadata.open_flags = None;
    let mut bare = full_alert();
    bare.pod = Default::default();
    bare.accessor = None;
    bare.metadata.tamper = None;
    bare.process.binary = String::new();
    bare.process.pid = 42;
    vec![full, odd, bare]
}

#[test]
fn direct_values_are_the_sdks() {
    let p = Plugin::new();
    let ids: Vec<usize> = (0..FIELDS.len())
        .filter(|&i| by_id()[i].is_some())
        .collect();
    let mut values = 0;
    for (n, a) in alerts().iter().enumerate() {
        let evt = event(a);
        for &id in &ids {
            let sdk = extract_one(&p, &evt, 0, id, Path::Sdk);
            // a new event number each field: the first field of an event
            let num = 1000 + (n * 1000 + id) as u64;
            let fresh = extract_one(&p, &evt, num, id, Path::Direct);
            // the same event number again: the payload as remembered
            let again = extract_one(&p, &evt, num, id, Path::Direct);
            let name = FIELDS[id].name;
            assert_eq!(fresh, sdk, "{name} of alert {n}: direct against the SDK's");
            assert_eq!(again, sdk, "{name} of alert {n}: from the remembered event");
            values += usize::from(sdk != Value::None);
        }
    }
    assert!(values > 3 * 20, "most fields had a value ({values})");
}

#[test]
fn a_new_event_or_another_instance_is_never_read_from_the_previous_ones_memory() {
    let id = |name: &str| FIELDS.iter().position(|f| f.name == name).expect(name);
    let (path, pid, comm) = (
        id("kive.path"),
        id("kive.process.pid"),
        id("kive.process.comm"),
    );
    let alert = |p: &str, pid: i32, comm: &str| {
        let mut a = full_alert();
        a.metadata.path = p.into();
        a.process.pid = pid;
        a.process.comm = comm.into();
        a
    };
    let (ea, eb) = (
        event(&alert("/secret-a.txt", 111, "cat")),
        event(&alert("/secret-b.txt", 222, "dog")),
    );
    assert_eq!(ea.len(), eb.len(), "the same length: only the event tells");
    let (one, two) = (Plugin::new(), Plugin::new());
    // one buffer, reused for each event as a framework may
    let mut buf = ea.clone();
    let read = |p: &Plugin, buf: &[u8], n: u64| {
        (
            extract_one(p, buf, n, path, Path::Ffi),
            extract_one(p, buf, n, pid, Path::Ffi),
            extract_one(p, buf, n, comm, Path::Ffi),
        )
    };
    let a = (
        Value::Str(b"/secret-a.txt".to_vec()),
        Value::U64(111),
        Value::Str(b"cat".to_vec()),
    );
    let b = (
        Value::Str(b"/secret-b.txt".to_vec()),
        Value::U64(222),
        Value::Str(b"dog".to_vec()),
    );
    assert_eq!(read(&one, &buf, 1), a, "event 1");
    buf.copy_from_slice(&eb);
    assert_eq!(read(&one, &buf, 2), b, "event 2 at event 1's address");
    // the other instance, event number 2 at the same address, another
    // event
    buf.copy_from_slice(&ea);
    assert_eq!(read(&two, &buf, 2), a, "another instance's event 2");
    // and the first instance's event 3 after it
    buf.copy_from_slice(&eb);
    assert_eq!(read(&one, &buf, 3), b, "event 3 after another instance");
    // a new instance at a destroyed one's address inherits its record
    // (this module is not told of the destroy): its numbering starts
    // again, the buffer and the length are the same, the event is not
    assert_eq!(read(&one, &buf, 3), b, "event 3 remembered");
    buf.copy_from_slice(&ea);
    assert_eq!(
        read(&one, &buf, 3),
        a,
        "the same number, address and length, another event: read again"
    );
}

#[test]
fn a_request_without_its_fields_is_refused_not_read() {
    let p = Plugin::new();
    let evt = event(&full_alert());
    // SAFETY: a table of Option<fn> is valid when zeroed (all None).
    let mut reader_ext: ss_plugin_table_reader_vtable_ext = unsafe { std::mem::zeroed() };
    let ev_in = ss_plugin_event_input {
        evt: evt.as_ptr().cast::<ss_plugin_event>(),
        evtnum: 1,
        evtsrc: c"kive".as_ptr(),
    };
    let mut call = |num_fields| {
        let input = ss_plugin_field_extract_input {
            owner: ptr::null_mut(),
            get_owner_last_error: None,
            num_fields,
            fields: ptr::null_mut(),
            // SAFETY: as above, an all-None vtable.
            table_reader: unsafe { std::mem::zeroed() },
            table_reader_ext: &mut reader_ext,
            value_offsets: ptr::null_mut(),
        };
        // SAFETY: a live plugin and a valid event; `fields` null on
        // purpose (the exported function must not read it).
        unsafe { crate::ffi::plugin_extract_fields(p.0, &ev_in, &input) }
    };
    let (none, some) = (call(0), call(3));
    assert_eq!(none, ss_plugin_rc_SS_PLUGIN_SUCCESS, "no field asked: done");
    assert_eq!(
        some, ss_plugin_rc_SS_PLUGIN_FAILURE,
        "three fields asked, none given: refused"
    );
}

// one instance's values across other instances, threads and event numbers
#[path = "direct_turns_tests.rs"]
mod turns;
