//! Shared by the Falco plugin tests: the built `libkive.so` loaded with
//! dlopen and driven through its `plugin_*` C symbols the way libscap and
//! libsinsp do, plus small helpers.
#![allow(dead_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::OnceLock;

use falco_plugin::api::{
    ss_instance_t, ss_plugin_event, ss_plugin_event_input, ss_plugin_extract_field,
    ss_plugin_extract_field__bindgen_ty_1, ss_plugin_field_extract_input, ss_plugin_init_input,
    ss_plugin_metric, ss_plugin_owner_t, ss_plugin_rc, ss_plugin_t,
    ss_plugin_table_reader_vtable_ext,
};

#[path = "../support/mounts.rs"]
mod mounts;
#[allow(unused_imports)] // not every Falco test loads the engine
pub use mounts::ensure_mounts;

mod build;
mod fields;
pub mod rules;
pub mod runner;
#[allow(unused_imports)] // each Falco test binary uses some of them
pub use {
    build::{built_so, cargo, test_file, PROFILE},
    fields::{ftype, FieldInfo, Fields, Value},
};

type Fn0Str = unsafe extern "C-unwind" fn() -> *const c_char;
type GetInitSchemaFn = unsafe extern "C-unwind" fn(*mut u32) -> *const c_char;
type InitFn =
    unsafe extern "C-unwind" fn(*const ss_plugin_init_input, *mut ss_plugin_rc) -> *mut ss_plugin_t;
type DestroyFn = unsafe extern "C-unwind" fn(*mut ss_plugin_t);
type GetLastErrorFn = unsafe extern "C-unwind" fn(*mut ss_plugin_t) -> *const c_char;
type GetIdFn = unsafe extern "C-unwind" fn() -> u32;
type OpenFn = unsafe extern "C-unwind" fn(
    *mut ss_plugin_t,
    *const c_char,
    *mut ss_plugin_rc,
) -> *mut ss_instance_t;
type CloseFn = unsafe extern "C-unwind" fn(*mut ss_plugin_t, *mut ss_instance_t);
type NextBatchFn = unsafe extern "C-unwind" fn(
    *mut ss_plugin_t,
    *mut ss_instance_t,
    *mut u32,
    *mut *mut *mut ss_plugin_event,
) -> ss_plugin_rc;
type EventToStringFn =
    unsafe extern "C-unwind" fn(*mut ss_plugin_t, *const ss_plugin_event_input) -> *const c_char;
type ExtractFieldsFn = unsafe extern "C-unwind" fn(
    *mut ss_plugin_t,
    *const ss_plugin_event_input,
    *const ss_plugin_field_extract_input,
) -> ss_plugin_rc;
type GetExtractEventTypesFn = unsafe extern "C-unwind" fn(*mut u32, *mut ss_plugin_t) -> *mut u16;
type GetMetricsFn =
    unsafe extern "C-unwind" fn(*mut ss_plugin_t, *mut u32) -> *mut ss_plugin_metric;
type ListOpenParamsFn =
    unsafe extern "C-unwind" fn(*mut ss_plugin_t, *mut ss_plugin_rc) -> *const c_char;
type GetProgressFn =
    unsafe extern "C-unwind" fn(*mut ss_plugin_t, *mut ss_instance_t, *mut u32) -> *const c_char;

/// The plugin's C API as libscap sees it after dlopen.
pub struct So {
    handle: *mut c_void,
    pub get_required_api_version: Fn0Str,
    pub get_version: Fn0Str,
    pub get_name: Fn0Str,
    pub get_description: Fn0Str,
    pub get_contact: Fn0Str,
    pub get_init_schema: GetInitSchemaFn,
    pub init: InitFn,
    pub destroy: DestroyFn,
    pub get_last_error: GetLastErrorFn,
    pub get_id: GetIdFn,
    pub get_event_source: Fn0Str,
    pub open: OpenFn,
    pub close: CloseFn,
    pub next_batch: NextBatchFn,
    pub event_to_string: EventToStringFn,
    pub get_fields: Fn0Str,
    pub extract_fields: ExtractFieldsFn,
    pub get_extract_event_sources: Fn0Str,
    pub get_extract_event_types: GetExtractEventTypesFn,
    pub get_metrics: GetMetricsFn,
    pub list_open_params: ListOpenParamsFn,
    pub get_progress: GetProgressFn,
}

// SAFETY: the handle is only used to look symbols up and is never closed;
// the plugin's functions are called the way Falco does (no overlapping
// calls on one plugin instance).
unsafe impl Send for So {}
// SAFETY: as above.
unsafe impl Sync for So {}

/// The symbols every plugin with source + extract capabilities exports.
pub const SYMBOLS: &[&str] = &[
    "plugin_get_required_api_version",
    "plugin_get_version",
    "plugin_get_name",
    "plugin_get_description",
    "plugin_get_contact",
    "plugin_get_init_schema",
    "plugin_init",
    "plugin_destroy",
    "plugin_get_last_error",
    "plugin_get_id",
    "plugin_get_event_source",
    "plugin_open",
    "plugin_close",
    "plugin_next_batch",
    "plugin_event_to_string",
    "plugin_list_open_params",
    "plugin_get_progress",
    "plugin_get_fields",
    "plugin_extract_fields",
    "plugin_get_extract_event_sources",
    "plugin_get_extract_event_types",
    "plugin_get_metrics",
    "plugin_set_config",
];

impl So {
    /// dlopens the built library once per test binary.
    pub fn get() -> &'static So {
        static SO: OnceLock<So> = OnceLock::new();
        SO.get_or_init(|| So::load(built_so()))
    }

    fn load(path: &Path) -> So {
        let c = CString::new(path.to_str().expect("utf8 path")).expect("no NUL");
        // SAFETY: dlopen with a valid C string; RTLD_LOCAL keeps the
        // library's symbols out of the global namespace (as libscap does).
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a valid C string after a failed dlopen.
            let err = unsafe { CStr::from_ptr(libc::dlerror()) };
            panic!("dlopen {}: {}", path.display(), err.to_string_lossy());
        }
        let sym = |name: &str| -> *mut c_void {
            let n = CString::new(name).expect("no NUL");
            // SAFETY: valid handle and C string.
            let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
            assert!(!p.is_null(), "{} does not export {name}", path.display());
            p
        };
        for s in SYMBOLS {
            sym(s);
        }
        macro_rules! f {
            ($name:literal, $ty:ty) => {
                // SAFETY: the symbol is the SDK-generated function of this
                // name, whose C signature $ty spells out (plugin_api.h of
                // plugin API 3.11).
                unsafe { std::mem::transmute::<*mut c_void, $ty>(sym($name)) }
            };
        }
        So {
            handle,
            get_required_api_version: f!("plugin_get_required_api_version", Fn0Str),
            get_version: f!("plugin_get_version", Fn0Str),
            get_name: f!("plugin_get_name", Fn0Str),
            get_description: f!("plugin_get_description", Fn0Str),
            get_contact: f!("plugin_get_contact", Fn0Str),
            get_init_schema: f!("plugin_get_init_schema", GetInitSchemaFn),
            init: f!("plugin_init", InitFn),
            destroy: f!("plugin_destroy", DestroyFn),
            get_last_error: f!("plugin_get_last_error", GetLastErrorFn),
            get_id: f!("plugin_get_id", GetIdFn),
            get_event_source: f!("plugin_get_event_source", Fn0Str),
            open: f!("plugin_open", OpenFn),
            close: f!("plugin_close", CloseFn),
            next_batch: f!("plugin_next_batch", NextBatchFn),
            event_to_string: f!("plugin_event_to_string", EventToStringFn),
            get_fields: f!("plugin_get_fields", Fn0Str),
            extract_fields: f!("plugin_extract_fields", ExtractFieldsFn),
            get_extract_event_sources: f!("plugin_get_extract_event_sources", Fn0Str),
            get_extract_event_types: f!("plugin_get_extract_event_types", GetExtractEventTypesFn),
            get_metrics: f!("plugin_get_metrics", GetMetricsFn),
            list_open_params: f!("plugin_list_open_params", ListOpenParamsFn),
            get_progress: f!("plugin_get_progress", GetProgressFn),
        }
    }
}

/// A C string returned by the plugin, copied.
pub fn string(p: *const c_char) -> String {
    assert!(!p.is_null(), "the plugin returned a NULL string");
    // SAFETY: the plugin returns NUL-terminated strings that stay valid
    // until its next call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

extern "C-unwind" fn owner_last_error(_o: *mut ss_plugin_owner_t) -> *const c_char {
    ptr::null()
}

/// An initialised plugin (destroyed on drop).
pub struct Plugin {
    pub so: &'static So,
    pub ptr: *mut ss_plugin_t,
}

impl Plugin {
    /// `plugin_init` with `config`; Err(last error) on failure.
    pub fn init(config: &str) -> Result<Plugin, String> {
        let so = So::get();
        let cfg = CString::new(config).expect("no NUL");
        let input = ss_plugin_init_input {
            config: cfg.as_ptr(),
            owner: ptr::null_mut(),
            get_owner_last_error: Some(owner_last_error),
            tables: ptr::null(),
            log_fn: None,
        };
        let mut rc: ss_plugin_rc = 0;
        // SAFETY: valid input struct and rc pointer, as libscap passes them.
        let p = unsafe { (so.init)(&input, &mut rc) };
        assert!(!p.is_null(), "init returns a handle even on failure");
        let plugin = Plugin { so, ptr: p };
        if rc != 0 {
            return Err(plugin.last_error());
        }
        Ok(plugin)
    }

    /// `plugin_get_last_error`.
    pub fn last_error(&self) -> String {
        // SAFETY: ptr came from init.
        string(unsafe { (self.so.get_last_error)(self.ptr) })
    }

    /// `plugin_open`; Err(last error) on failure.
    pub fn open(&self, params: Option<&str>) -> Result<Instance<'_>, String> {
        let params = params.map(|p| CString::new(p).expect("no NUL"));
        let mut rc: ss_plugin_rc = 0;
        // SAFETY: valid plugin, params pointer NULL or a C string.
        let inst = unsafe {
            (self.so.open)(
                self.ptr,
                params.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                &mut rc,
            )
        };
        if rc != 0 {
            return Err(self.last_error());
        }
        assert!(!inst.is_null(), "open succeeded with a NULL instance");
        Ok(Instance {
            plugin: self,
            ptr: inst,
        })
    }

    /// `plugin_get_metrics` as (name, u64 value).
    pub fn metrics(&self) -> Vec<(String, u64)> {
        let mut n = 0u32;
        // SAFETY: valid plugin and count pointer.
        let m = unsafe { (self.so.get_metrics)(self.ptr, &mut n) };
        // SAFETY: the plugin returns n metrics at m.
        let m = unsafe { std::slice::from_raw_parts(m, n as usize) };
        m.iter()
            // SAFETY: kive reports every metric as a u64.
            .map(|m| (string(m.name), unsafe { m.value.u64_ }))
            .collect()
    }

    /// The value of one metric.
    pub fn metric(&self, name: &str) -> u64 {
        let all = self.metrics();
        all.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("metric {name} in {all:?}"))
            .1
    }

    /// Extracts one field of an event the way libsinsp does (one field per
    /// call); `Err(rc)` when the plugin fails.
    pub fn extract(&self, evt: *const ss_plugin_event, field: &str) -> Result<Value, ss_plugin_rc> {
        self.extract_in(evt, field, c"kive")
    }

    /// [`Plugin::extract`] of an event of source `evtsrc` (`syscall` for
    /// kive's async events).
    pub fn extract_in(
        &self,
        evt: *const ss_plugin_event,
        field: &str,
        evtsrc: &CStr,
    ) -> Result<Value, ss_plugin_rc> {
        // event number 0: nothing kept past this call (the values are
        // copied out below)
        let (req, f) = self.extract_raw(evt, 0, field, evtsrc)?;
        let n = req.res_len as usize;
        // SAFETY: on success, res points to res_len values of the field's
        // type, valid until the next extraction.
        let values: Vec<Value> = unsafe {
            match f.ty.as_str() {
                "uint64" => (0..n)
                    .map(|i| Value::U64(std::ptr::read_unaligned(req.res.u64_.add(i))))
                    .collect(),
                "bool" => (0..n)
                    .map(|i| Value::Bool(std::ptr::read_unaligned(req.res.boolean.add(i)) != 0))
                    .collect(),
                _ => (0..n)
                    .map(|i| Value::Str(string(*req.res.str_.add(i))))
                    .collect(),
            }
        };
        Ok(if f.list {
            Value::List(values)
        } else {
            values.into_iter().next().unwrap_or(Value::None)
        })
    }

    /// One `plugin_extract_fields` call for `field` of event number
    /// `evtnum` (source kive), as libsinsp makes it; the request as the
    /// plugin filled it (its `res` pointers are the plugin's memory).
    pub fn extract_raw(
        &self,
        evt: *const ss_plugin_event,
        evtnum: u64,
        field: &str,
        evtsrc: &CStr,
    ) -> Result<(ss_plugin_extract_field, &'static FieldInfo), ss_plugin_rc> {
        let fields = Fields::get();
        let (name, arg) = match field.split_once('[') {
            Some((n, a)) => (n, Some(a.trim_end_matches(']'))),
            None => (field, None),
        };
        let (id, f) = fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            .unwrap_or_else(|| panic!("no field {name}"));
        let cname = CString::new(name).expect("no NUL");
        let carg = arg.map(|a| CString::new(a).expect("no NUL"));
        let mut req = ss_plugin_extract_field {
            res: ss_plugin_extract_field__bindgen_ty_1 {
                u64_: ptr::null_mut(),
            },
            res_len: 0,
            field_id: id as u32,
            field: cname.as_ptr(),
            arg_key: carg.as_ref().map_or(ptr::null(), |a| a.as_ptr()),
            arg_index: 0,
            arg_present: carg.is_some() as u32,
            ftype: ftype(&f.ty),
            flist: f.list as u32,
        };
        // SAFETY: a table of Option<fn> is valid when zeroed (all None);
        // kive reads no table.
        let mut reader_ext: ss_plugin_table_reader_vtable_ext = unsafe { std::mem::zeroed() };
        let input = ss_plugin_field_extract_input {
            owner: ptr::null_mut(),
            get_owner_last_error: Some(owner_last_error),
            num_fields: 1,
            fields: &mut req,
            // SAFETY: as above, an all-None vtable.
            table_reader: unsafe { std::mem::zeroed() },
            table_reader_ext: &mut reader_ext,
            value_offsets: ptr::null_mut(),
        };
        let ev_in = ss_plugin_event_input {
            evt,
            evtnum,
            evtsrc: evtsrc.as_ptr(),
        };
        // SAFETY: valid plugin, event from next_batch, input as libsinsp
        // builds it.
        let rc = unsafe { (self.so.extract_fields)(self.ptr, &ev_in, &input) };
        if rc != 0 {
            return Err(rc);
        }
        Ok((req, f))
    }

    /// `plugin_event_to_string`.
    pub fn event_to_string(&self, evt: *const ss_plugin_event) -> String {
        let src = c"kive";
        let ev_in = ss_plugin_event_input {
            evt,
            evtnum: 1,
            evtsrc: src.as_ptr(),
        };
        // SAFETY: valid plugin and event.
        string(unsafe { (self.so.event_to_string)(self.ptr, &ev_in) })
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // SAFETY: ptr came from init and is destroyed once.
        unsafe { (self.so.destroy)(self.ptr) }
    }
}

/// An open capture (closed on drop).
pub struct Instance<'p> {
    pub plugin: &'p Plugin,
    pub ptr: *mut ss_instance_t,
}

/// A copy of one event of a batch.
#[derive(Debug, Clone)]
pub struct OwnedEvent(pub Vec<u8>);

impl OwnedEvent {
    /// The event as the plugin API passes it.
    pub fn as_ptr(&self) -> *const ss_plugin_event {
        self.0.as_ptr().cast()
    }
    /// Timestamp.
    pub fn ts(&self) -> u64 {
        u64::from_ne_bytes(self.0[0..8].try_into().expect("8"))
    }
    /// Event type.
    pub fn event_type(&self) -> u16 {
        u16::from_ne_bytes(self.0[20..22].try_into().expect("2"))
    }
    /// Number of parameters.
    pub fn nparams(&self) -> u32 {
        u32::from_ne_bytes(self.0[22..26].try_into().expect("4"))
    }
    /// Length of parameter `i` (PLUGINEVENT_E uses u32 lengths).
    pub fn param_len(&self, i: usize) -> u32 {
        let at = 26 + 4 * i;
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4"))
    }
    /// The plugin id parameter.
    pub fn plugin_id(&self) -> u32 {
        let at = 26 + 4 * self.nparams() as usize;
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4"))
    }
    /// The payload parameter.
    pub fn data(&self) -> &[u8] {
        let at = 26 + 4 * self.nparams() as usize + self.param_len(0) as usize;
        &self.0[at..at + self.param_len(1) as usize]
    }
}

impl Instance<'_> {
    /// One `plugin_next_batch`: (rc, copies of the events).
    pub fn next_batch(&self) -> (ss_plugin_rc, Vec<OwnedEvent>) {
        let mut n = 0u32;
        let mut evts: *mut *mut ss_plugin_event = ptr::null_mut();
        // SAFETY: valid plugin and instance, out pointers as libscap passes.
        let rc =
            unsafe { (self.plugin.so.next_batch)(self.plugin.ptr, self.ptr, &mut n, &mut evts) };
        let mut out = Vec::new();
        for i in 0..n as usize {
            // SAFETY: on return, evts holds n pointers to complete events.
            unsafe {
                let e = *evts.add(i);
                let len = std::ptr::read_unaligned(std::ptr::addr_of!((*e).len)) as usize;
                out.push(OwnedEvent(
                    std::slice::from_raw_parts(e.cast::<u8>(), len).to_vec(),
                ));
            }
        }
        (rc, out)
    }
}

impl Drop for Instance<'_> {
    fn drop(&mut self) {
        // SAFETY: ptr came from open and is closed once.
        unsafe { (self.plugin.so.close)(self.plugin.ptr, self.ptr) }
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("json")
}
