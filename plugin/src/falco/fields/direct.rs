//! kive's own extraction of its plain fields, each value written once
//! straight into the kept arena ([`crate::falco::kept`]).
//!
//! The SDK's path parses the event and decodes the payload's header at
//! every call (libsinsp asks one field per call), builds a `CString` per
//! string, copies it into its arena, and [`crate::falco::kept::keep`]
//! copies it again. Here the event is parsed and its header decoded at
//! the first field of an event and remembered with the arena (same plugin
//! instance, same event number, same buffer, same length; event number 0
//! is never remembered), and each value is written once into the arena.
//! Only the string slots, the numbers and `kive.access` go this way, for
//! a request without argument or offsets: anything else (a field with an
//! argument, a list, a bool, a payload that does not decode, a null
//! pointer) returns `None` and the caller takes the SDK's path, so errors
//! and their messages stay the SDK's.

use std::alloc::Layout;
use std::ffi::c_char;
use std::ptr;
use std::sync::OnceLock;

use bumpalo::Bump;
use falco_plugin::api::{
    ss_plugin_event_input, ss_plugin_extract_field, ss_plugin_field_extract_input, ss_plugin_rc,
    ss_plugin_rc_SS_PLUGIN_SUCCESS, ss_plugin_t,
};
use falco_plugin::event::events::{Event, RawEvent};

use super::numbers::{self, Getter};
use super::{escaped, plain, FIELDS};
use crate::falco::kept::{with_arena, EventSeen};
use crate::falco::payload::{Decoded, KiveAnyEvent, Slot, FIXED};

/// How a field is extracted directly.
#[derive(Debug, Clone, Copy)]
enum Direct {
    /// A string slot, escaped as [`super::escaped`] does.
    Text(Slot),
    /// A number of the header.
    Number(Getter),
    /// `kive.access`.
    Access,
}

/// The fields extracted directly, by name (the SDK's extractor of each
/// gives the same value: `direct_values_are_the_sdks` in the tests).
const DIRECT: &[(&str, Direct)] = {
    use Direct::{Access, Number as N, Text as T};
    &[
        ("kive.alert.version", T(Slot::AlertVersion)),
        ("kive.policy.name", T(Slot::PolicyName)),
        ("kive.trap.path", T(Slot::TrapPath)),
        ("kive.path", T(Slot::Path)),
        ("kive.inode", N(numbers::inode)),
        ("kive.dev", T(Slot::Dev)),
        ("kive.mask", N(numbers::mask)),
        ("kive.access", Access),
        ("kive.action", T(Slot::Action)),
        ("kive.hook", T(Slot::Hook)),
        ("kive.owner", T(Slot::Owner)),
        ("kive.open.flags", N(numbers::open_flags)),
        ("kive.suppressed", N(numbers::suppressed)),
        ("kive.tamper", T(Slot::TamperKind)),
        ("kive.tamper.old_path", T(Slot::TamperOldPath)),
        ("kive.tamper.new_path", T(Slot::TamperNewPath)),
        ("kive.armed_as", T(Slot::ArmedAs)),
        ("kive.kernel.id", T(Slot::KernelId)),
        ("kive.callback", T(Slot::Callback)),
        ("kive.pod.name", T(Slot::PodName)),
        ("kive.pod.namespace", T(Slot::PodNamespace)),
        ("kive.pod.ip", T(Slot::PodIp)),
        ("kive.pod.uid", T(Slot::PodUid)),
        ("kive.pod.serviceaccount", T(Slot::ServiceAccount)),
        ("kive.pod.workload.kind", T(Slot::WorkloadKind)),
        ("kive.pod.workload.name", T(Slot::WorkloadName)),
        ("kive.container.id", T(Slot::ContainerId)),
        ("kive.container.name", T(Slot::ContainerName)),
        ("kive.container.image", T(Slot::ContainerImage)),
        ("kive.node.name", T(Slot::NodeName)),
        ("kive.process.pid", N(numbers::pid)),
        ("kive.process.tgid", N(numbers::tgid)),
        ("kive.process.ppid", N(numbers::ppid)),
        ("kive.process.parent.comm", T(Slot::ParentComm)),
        ("kive.process.parent.binary", T(Slot::ParentBinary)),
        ("kive.process.vpid", N(numbers::vpid)),
        ("kive.process.loginuid", N(numbers::loginuid)),
        ("kive.process.uid", N(numbers::uid)),
        ("kive.process.gid", N(numbers::gid)),
        ("kive.process.binary", T(Slot::Binary)),
        ("kive.process.cwd", T(Slot::Cwd)),
        ("kive.process.args", T(Slot::Arguments)),
        ("kive.process.comm", T(Slot::Comm)),
        ("kive.cgroup.id", N(numbers::cgroup_id)),
        ("kive.accessor.container.id", T(Slot::AccessorContainerId)),
        (
            "kive.accessor.container.name",
            T(Slot::AccessorContainerName),
        ),
        ("kive.accessor.pod.name", T(Slot::AccessorPodName)),
        ("kive.accessor.pod.namespace", T(Slot::AccessorPodNamespace)),
        ("kive.accessor.cgroup", T(Slot::AccessorCgroup)),
    ]
};

/// [`DIRECT`] indexed by field id (the position in [`FIELDS`]).
fn by_id() -> &'static [Option<Direct>] {
    static TABLE: OnceLock<Vec<Option<Direct>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FIELDS
            .iter()
            .map(|f| DIRECT.iter().find(|(n, _)| *n == f.name).map(|&(_, d)| d))
            .collect()
    })
}

/// Extracts the call's fields directly into the kept arena of `plugin`;
/// `None` when a field or the event is not for this path (the caller
/// then takes the SDK's).
///
/// # Safety
/// The plugin API's contract for `plugin_extract_fields`: the pointers
/// are null or valid for the call, `fields` holds `num_fields` requests.
pub unsafe fn extract(
    plugin: *mut ss_plugin_t,
    event_input: *const ss_plugin_event_input,
    extract_input: *const ss_plugin_field_extract_input,
) -> Option<ss_plugin_rc> {
    // SAFETY: null or valid for the call (caller's contract).
    let (evt, input) = unsafe { (event_input.as_ref()?, extract_input.as_ref()?) };
    if plugin.is_null()
        || evt.evt.is_null()
        || input.fields.is_null()
        || input.num_fields == 0
        || input.table_reader_ext.is_null()
        || !input.value_offsets.is_null()
    {
        return None;
    }
    // SAFETY: `fields` points to `num_fields` requests (caller's contract).
    let fields = unsafe { std::slice::from_raw_parts_mut(input.fields, input.num_fields as usize) };
    let table = by_id();
    if !fields
        .iter()
        .all(|f| f.arg_present == 0 && matches!(table.get(f.field_id as usize), Some(Some(_))))
    {
        return None;
    }
    // SAFETY: a valid event (caller's contract): its header's length.
    let evt_len = unsafe { (*evt.evt).len };
    let at = evt.evt as usize;
    with_arena(plugin, evt.evtnum, |store, seen| {
        // SAFETY: a valid event of `evt_len` bytes (caller's contract).
        let known = seen
            .as_ref()
            .is_some_and(|s| evt.evtnum != 0 && unsafe { s.is(evt.evt.cast(), evt_len) });
        let fresh = if known {
            None
        } else {
            let room = seen.take().map(|s| s.read).unwrap_or_default();
            // SAFETY: a valid event (caller's contract).
            Some(unsafe { look(evt.evt.cast(), at, evt_len, room)? })
        };
        let seen = match fresh {
            Some(s) => seen.insert(s),
            None => seen.as_mut()?,
        };
        let payload = match &seen.payload {
            None => None,
            Some((off, len, decoded)) => {
                if off.checked_add(*len)? > evt_len as usize {
                    return None;
                }
                // SAFETY: inside the event's `evt_len` bytes (checked).
                let data =
                    unsafe { std::slice::from_raw_parts(evt.evt.cast::<u8>().add(*off), *len) };
                Some((data, decoded))
            }
        };
        for f in fields.iter_mut() {
            let direct = table.get(f.field_id as usize).copied().flatten()?;
            match payload {
                Some((data, d)) => write(store, f, direct, data, d),
                None => no_value(f),
            }
        }
        Some(ss_plugin_rc_SS_PLUGIN_SUCCESS)
    })
}

/// Parses the event at `evt` and decodes its payload's header (`read`:
/// room for the copy of what was read).
///
/// # Safety
/// `evt` points to a valid event of `evt_len` bytes.
unsafe fn look(evt: *const u8, at: usize, evt_len: u32, mut read: Vec<u8>) -> Option<EventSeen> {
    // SAFETY: a valid event (caller's contract).
    let raw = unsafe { RawEvent::from_ptr(evt) }.ok()?;
    let event: Event<KiveAnyEvent<'_>> = (&raw).try_into().ok()?;
    let payload = match event.params.kive_payload() {
        None => None,
        Some(data) => {
            let off = (data.as_ptr() as usize).checked_sub(at)?;
            Some((off, data.len(), Decoded::decode(data).ok()?))
        }
    };
    // what the decode read: up to the payload's fixed part (a non-kive
    // event is parsed again at each call: never remembered)
    read.clear();
    if let Some((off, _, _)) = &payload {
        let end = off.checked_add(FIXED)?.min(evt_len as usize);
        // SAFETY: `end` ≤ `evt_len` bytes of the valid event.
        read.extend_from_slice(unsafe { std::slice::from_raw_parts(evt, end) });
    }
    Some(EventSeen {
        evt: at,
        evt_len,
        payload,
        read,
    })
}

/// Writes one field's value into `store` and points `f` at it.
fn write(store: &Bump, f: &mut ss_plugin_extract_field, direct: Direct, data: &[u8], d: &Decoded) {
    match direct {
        Direct::Text(slot) => match d.text(data, slot) {
            Some(b) => string(store, f, b),
            None => no_value(f),
        },
        Direct::Number(get) => match get(d.numbers()) {
            Some(v) => {
                f.res.u64_ = store.alloc(v);
                f.res_len = 1;
            }
            None => no_value(f),
        },
        Direct::Access => match numbers::access(d.numbers()) {
            // a static value: only its pointer goes into the arena
            Some(names) => one_string(store, f, names.as_ptr()),
            None => no_value(f),
        },
    }
}

/// One string value: `b` escaped, with its NUL, in `store`.
fn string(store: &Bump, f: &mut ss_plugin_extract_field, b: &[u8]) {
    let s: *const u8 = if plain(b) {
        // one copy: the bytes, then the NUL (printable ASCII holds none)
        let Ok(layout) = Layout::array::<u8>(b.len() + 1) else {
            return no_value(f); // longer than memory: never a slice's
        };
        let s = store.alloc_layout(layout).as_ptr();
        // SAFETY: `s` is `b.len() + 1` fresh bytes of the arena (`layout`).
        unsafe {
            ptr::copy_nonoverlapping(b.as_ptr(), s, b.len());
            s.add(b.len()).write(0);
        }
        s
    } else {
        store
            .alloc_slice_copy(escaped(b).as_bytes_with_nul())
            .as_ptr()
    };
    one_string(store, f, s.cast());
}

/// `f`'s one value: the C string at `s` (valid until the arena's reset).
fn one_string(store: &Bump, f: &mut ss_plugin_extract_field, s: *const c_char) {
    let p: &mut *const c_char = store.alloc(s);
    f.res.str_ = p;
    f.res_len = 1;
}

/// No value (`<NA>`), as the SDK reports one.
fn no_value(f: &mut ss_plugin_extract_field) {
    f.res.u64_ = ptr::null_mut();
    f.res_len = 0;
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
