//! The async path through the dlopened `libkive.so`, set up the way Falco
//! 0.41 sets it up (libsinsp's `sinsp::open` and
//! `handle_plugin_async_event`): two plugin objects with the same
//! init_config (`asyncEvents: true`), one per inspector. The `kive`
//! inspector's object opens the capture; both get an async handler
//! (`plugin_set_async_event_handler`); the `kive` inspector's handler refuses
//! events that carry a thread, as libsinsp does for a plugin source, the
//! `syscall` one accepts them. Every alert must reach the syscall handler as
//! one well-formed `PPME_ASYNCEVENT_E` (type 402, 3 parameters, the name
//! `kive_alert`, the accessing thread as `tid`, the alert's time), whose
//! `kive.*` fields the syscall inspector's object extracts (event source
//! `syscall`); the refusing handler is not called again; resetting the
//! handlers (libsinsp's close) succeeds.
//!
//! One test in its own binary: kive's list of async handlers is
//! process-wide.

mod falco_common;

use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;

use falco_plugin::api::{
    ss_plugin_event, ss_plugin_owner_t, ss_plugin_rc, ss_plugin_rc_SS_PLUGIN_EOF,
    ss_plugin_rc_SS_PLUGIN_FAILURE, ss_plugin_rc_SS_PLUGIN_SUCCESS, ss_plugin_rc_SS_PLUGIN_TIMEOUT,
    ss_plugin_t,
};

use falco_common::{built_so, json_str, test_file, Plugin, Value};

const ASYNC_EVENT: u16 = 402;
const NAME: &[u8] = b"kive_alert\0";

type Handler = unsafe extern "C-unwind" fn(
    *mut ss_plugin_owner_t,
    *const ss_plugin_event,
    *mut c_char,
) -> ss_plugin_rc;
type SetHandler = unsafe extern "C-unwind" fn(
    *mut ss_plugin_t,
    *mut ss_plugin_owner_t,
    Option<Handler>,
) -> ss_plugin_rc;

/// The owners libsinsp would pass (its inspectors); opaque to the plugin.
const KIVE_INSPECTOR: usize = 1;
const SYSCALL_INSPECTOR: usize = 2;

/// (owner, copy of the event) of every handler call.
static CALLS: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());

fn calls() -> std::sync::MutexGuard<'static, Vec<(usize, Vec<u8>)>> {
    CALLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// libsinsp's handler, reduced to what it checks: an event with a thread
/// is refused for a plugin source's inspector (with an error message), and
/// queued for the syscall inspector.
unsafe extern "C-unwind" fn handler(
    owner: *mut ss_plugin_owner_t,
    evt: *const ss_plugin_event,
    err: *mut c_char,
) -> ss_plugin_rc {
    // SAFETY: the plugin passes a complete event, valid during the call.
    let bytes = unsafe {
        let len = std::ptr::read_unaligned(std::ptr::addr_of!((*evt).len)) as usize;
        std::slice::from_raw_parts(evt.cast::<u8>(), len).to_vec()
    };
    let tid = i64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
    calls().push((owner as usize, bytes));
    if owner as usize == KIVE_INSPECTOR && tid != -1 {
        let msg = b"async events of plugin 'kive' can have no thread associated with open event source 'kive'\0";
        // SAFETY: err is the plugin's buffer of PLUGIN_MAX_ERRLEN (1024)
        // bytes; the message is shorter.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), err, msg.len()) };
        return ss_plugin_rc_SS_PLUGIN_FAILURE;
    }
    ss_plugin_rc_SS_PLUGIN_SUCCESS
}

fn set_handler() -> SetHandler {
    let path = CString::new(built_so().to_str().expect("utf8")).expect("no NUL");
    // SAFETY: dlopen of the library falco_common already loaded (the same
    // handle, refcounted); dlsym with a valid C string.
    let sym = unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen {}", built_so().display());
        libc::dlsym(h, c"plugin_set_async_event_handler".as_ptr())
    };
    assert!(
        !sym.is_null(),
        "libkive.so does not export plugin_set_async_event_handler"
    );
    // SAFETY: the SDK-generated function of that name has this C signature
    // (plugin_api.h of plugin API 3.11).
    unsafe { std::mem::transmute::<*mut c_void, SetHandler>(sym) }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[test]
fn alerts_reach_the_syscall_inspectors_handler_as_async_events_with_their_thread() {
    let replay = test_file("kive_alerts.jsonl");
    let cfg = format!(
        r#"{{"mode":"replay","replayFile":{},"asyncEvents":true}}"#,
        json_str(replay.to_str().expect("utf8"))
    );
    // (path, pid, time) of every recorded alert
    let text = std::fs::read_to_string(&replay).expect("test file");
    let want: Vec<(String, i64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["metadata"]["path"].as_str().expect("path").into(),
                v["process"]["pid"].as_i64().expect("pid"),
            )
        })
        .collect();

    let syscall = Plugin::init(&cfg).unwrap_or_else(|e| panic!("init: {e}"));
    let kive = Plugin::init(&cfg).unwrap_or_else(|e| panic!("init: {e}"));
    let capture = kive.open(None).unwrap_or_else(|e| panic!("open: {e}"));
    let set = set_handler();
    for (p, owner) in [(&kive, KIVE_INSPECTOR), (&syscall, SYSCALL_INSPECTOR)] {
        // SAFETY: a valid plugin; the owner is opaque to the plugin and
        // handed back to the handler only.
        let rc = unsafe { set(p.ptr, owner as *mut ss_plugin_owner_t, Some(handler)) };
        assert_eq!(
            rc,
            ss_plugin_rc_SS_PLUGIN_SUCCESS,
            "set handler: {}",
            p.last_error()
        );
    }

    let mut delivered = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (rc, evs) = capture.next_batch();
        delivered.extend(evs);
        match rc {
            rc if rc == ss_plugin_rc_SS_PLUGIN_EOF => break,
            rc if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS || rc == ss_plugin_rc_SS_PLUGIN_TIMEOUT => {}
            rc => panic!("next_batch: rc {rc}: {}", kive.last_error()),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replay did not end within 60s"
        );
    }
    assert_eq!(delivered.len(), want.len(), "one kive event per alert");
    for p in [&kive, &syscall] {
        // SAFETY: as above; None stops the async capture.
        let rc = unsafe { set(p.ptr, std::ptr::null_mut(), None) };
        assert_eq!(
            rc,
            ss_plugin_rc_SS_PLUGIN_SUCCESS,
            "reset handler: {}",
            p.last_error()
        );
    }

    let got = std::mem::take(&mut *calls());
    let refused: Vec<_> = got.iter().filter(|(o, _)| *o == KIVE_INSPECTOR).collect();
    assert_eq!(
        refused.len(),
        1,
        "the refusing handler gets the first alert only, then is dropped"
    );
    let accepted: Vec<&Vec<u8>> = got
        .iter()
        .filter(|(o, _)| *o == SYSCALL_INSPECTOR)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(accepted.len(), want.len(), "one async event per alert");
    for (i, (ev, (path, pid))) in accepted.iter().zip(&want).enumerate() {
        let ts = u64::from_ne_bytes(ev[0..8].try_into().expect("8"));
        let tid = i64::from_ne_bytes(ev[8..16].try_into().expect("8"));
        let ty = u16::from_ne_bytes(ev[20..22].try_into().expect("2"));
        let nparams = u32_at(ev, 22);
        assert_eq!(
            (ty, nparams),
            (ASYNC_EVENT, 3),
            "event {i}: PPME_ASYNCEVENT_E"
        );
        assert_eq!(tid, *pid, "event {i}: the accessing thread");
        // the kive event of the same alert has the same time
        assert_eq!(ts, delivered[i].ts(), "event {i}: the alert's time");
        let lens = [u32_at(ev, 26), u32_at(ev, 30), u32_at(ev, 34)];
        assert_eq!(lens[0], 4, "event {i}: plugin id parameter");
        assert_eq!(lens[1] as usize, NAME.len(), "event {i}: name parameter");
        let name_at = 38 + 4;
        assert_eq!(&ev[name_at..name_at + NAME.len()], NAME, "event {i}: name");
        assert_eq!(
            38 + lens.iter().sum::<u32>() as usize,
            ev.len(),
            "event {i}: the header's length covers exactly the parameters"
        );
        assert_eq!(
            &ev[name_at + NAME.len()..],
            delivered[i].data(),
            "event {i}: the same payload as the kive event"
        );
        let evp = ev.as_ptr().cast::<ss_plugin_event>();
        assert_eq!(
            syscall.extract_in(evp, "kive.path", c"syscall"),
            Ok(Value::s(path)),
            "event {i}"
        );
        assert_eq!(
            syscall.extract_in(evp, "kive.process.pid", c"syscall"),
            Ok(Value::U64(*pid as u64)),
            "event {i}"
        );
    }
    drop(capture);
}
