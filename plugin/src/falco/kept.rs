//! Extracted values kept until the next event.
//!
//! The `falco_plugin` SDK writes the values of an `extract_fields` call
//! into a per-plugin arena that it resets at the start of the next call.
//! libsinsp's extraction cache keeps the pointers of one call (a shallow
//! copy, `sinsp_filter_extract_cache::update`) and reads them again when
//! the same field appears a second time in a rule for the same event, after
//! other fields were extracted: with the SDK's arena that read is a use
//! after free (a rule such as `kive.path exists and not kive.process.comm
//! in (e) and not kive.path = ""` then depends on what the allocator left
//! in the freed bytes). [`keep`] copies each value the SDK returned into
//! kive's own arena for the plugin, which is reset only when an event with
//! another number arrives, and points the request's `res` at the copy.
//! Event number 0 (Falco numbers events from 1; libsinsp caches nothing
//! for 0) keeps a call's values until the next call only, as the SDK does.

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::Mutex;

use bumpalo::Bump;

use crate::falco::payload::Decoded;
use crate::sync::lock;
use falco_plugin::api::{
    ss_plugin_byte_buffer, ss_plugin_event_input, ss_plugin_extract_field,
    ss_plugin_field_extract_input, ss_plugin_field_type_FTYPE_ABSTIME,
    ss_plugin_field_type_FTYPE_BOOL, ss_plugin_field_type_FTYPE_IPADDR,
    ss_plugin_field_type_FTYPE_IPNET, ss_plugin_field_type_FTYPE_RELTIME,
    ss_plugin_field_type_FTYPE_STRING, ss_plugin_field_type_FTYPE_UINT64, ss_plugin_t,
};

/// Plugin instances with an arena kept; past this, the entry looked up
/// least recently goes: a destroyed instance (this module is not told)
/// ages out; a live one goes only when this many other instances were
/// used since its last call.
const MAX_INSTANCES: usize = 64;

struct Kept {
    plugin: usize,
    evtnum: u64,
    /// When it was last used ([`Arenas::tick`]).
    used: u64,
    store: Bump,
    /// What the direct extraction learnt of event `evtnum` (cleared with
    /// the arena).
    event: Option<EventSeen>,
}

/// The payload of one event as found by its first direct extraction
/// ([`crate::falco::fields::direct`]), for the next fields of the same
/// event (same plugin instance, same event number, same buffer).
#[derive(Debug, Clone)]
pub struct EventSeen {
    /// The event's address.
    pub evt: usize,
    /// The event's length (from its header).
    pub evt_len: u32,
    /// The payload's offset in the event, its length and decoded header;
    /// `None`: not a kive payload (another plugin's async event).
    pub payload: Option<(usize, usize, Decoded)>,
    /// A copy of the bytes all of that was read from (the event's header
    /// and parameter lengths up to the payload's fixed part): another
    /// event in the same buffer, with the same number and length (a new
    /// plugin instance at a destroyed one's address, its numbering
    /// restarted), is told apart by them. Empty: never reused.
    pub read: Vec<u8>,
}

impl EventSeen {
    /// Whether the event of `evt_len` bytes at `evt` is the one seen.
    ///
    /// # Safety
    /// `evt` points to `evt_len` readable bytes.
    pub unsafe fn is(&self, evt: *const u8, evt_len: u32) -> bool {
        if self.read.is_empty()
            || evt as usize != self.evt
            || evt_len != self.evt_len
            || self.read.len() > evt_len as usize
        {
            return false;
        }
        // SAFETY: `read.len()` ≤ `evt_len` readable bytes (checked above).
        let now = unsafe { std::slice::from_raw_parts(evt, self.read.len()) };
        same_bytes(now, &self.read)
    }
}

/// Whether `a` and `b` hold the same bytes, every byte of both read (no
/// early exit, no call: for the hundred bytes or so of [`EventSeen::read`]
/// at each extraction call, cheaper than `memcmp`).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // chunks of exactly 8 bytes: never the fallback
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a1, b1) = (a8.remainder(), b8.remainder());
    let words = a8.zip(b8).fold(0u64, |d, (x, y)| d | (word(x) ^ word(y)));
    let bytes = a1.iter().zip(b1).fold(0u8, |d, (x, y)| d | (x ^ y));
    words == 0 && bytes == 0
}

struct Arenas {
    tick: u64,
    all: Vec<Kept>,
}

static KEPT: Mutex<Arenas> = Mutex::new(Arenas {
    tick: 0,
    all: Vec::new(),
});

/// Copies the values of a successful `extract_fields` call of `plugin`
/// into its arena and points every field's `res` at the copy.
///
/// # Safety
/// `evt` and `input` are the call's valid arguments, and each field's
/// `res` holds `res_len` valid values of its `ftype` (the SDK's output).
pub unsafe fn keep(
    plugin: *mut ss_plugin_t,
    evt: &ss_plugin_event_input,
    input: &ss_plugin_field_extract_input,
) {
    if input.fields.is_null() || input.num_fields == 0 {
        return;
    }
    // SAFETY: `fields` points to `num_fields` requests (caller's contract).
    let fields = unsafe { std::slice::from_raw_parts_mut(input.fields, input.num_fields as usize) };
    with_arena(plugin, evt.evtnum, |store, _| {
        for f in fields {
            // SAFETY: the SDK's output for this field (caller's contract).
            unsafe { copy(store, f) };
        }
    });
}

/// Runs `f` on the arena of `plugin` for event `evtnum` and on what was
/// seen of that event, under the lock: both are emptied first when
/// `evtnum` is not the arena's event, or is 0 (libsinsp caches nothing
/// for event number 0: a call's values are kept until the next call).
// inlined: `f`'s captures stay in registers (passed by value to a call,
// the copy of them stalled each call, ≈ 6 ns)
#[inline(always)]
pub fn with_arena<R>(
    plugin: *mut ss_plugin_t,
    evtnum: u64,
    f: impl FnOnce(&Bump, &mut Option<EventSeen>) -> R,
) -> R {
    let mut arenas = lock(&KEPT);
    let kept = arenas.of(plugin as usize, evtnum);
    if evtnum == 0 || evtnum != kept.evtnum {
        kept.store.reset();
        kept.evtnum = evtnum;
        // forgotten (never reused: nothing read to compare), its copy's
        // room kept for the next event's
        if let Some(seen) = &mut kept.event {
            seen.read.clear();
        }
    }
    f(&kept.store, &mut kept.event)
}

impl Arenas {
    /// The arena of `plugin`, made when it has none (the least recently
    /// used one given up past [`MAX_INSTANCES`]).
    fn of(&mut self, plugin: usize, evtnum: u64) -> &mut Kept {
        self.tick += 1;
        let tick = self.tick;
        let i = match self.all.iter().position(|k| k.plugin == plugin) {
            Some(i) => i,
            None => {
                if self.all.len() >= MAX_INSTANCES {
                    if let Some(lru) = (0..self.all.len()).min_by_key(|&i| self.all[i].used) {
                        self.all.swap_remove(lru);
                    }
                }
                self.all.push(Kept {
                    plugin,
                    evtnum,
                    used: tick,
                    store: Bump::new(),
                    event: None,
                });
                self.all.len() - 1
            }
        };
        let kept = &mut self.all[i];
        kept.used = tick;
        kept
    }
}

/// Copies `f`'s values into `store` and points `f.res` at the copy.
///
/// # Safety
/// `f.res` holds `f.res_len` valid values of `f.ftype`.
unsafe fn copy(store: &Bump, f: &mut ss_plugin_extract_field) {
    let n = f.res_len as usize;
    // SAFETY: every member of the union is a pointer; reading one as raw
    // bits only checks for null.
    if n == 0 || unsafe { f.res.u64_.is_null() } {
        return;
    }
    // SAFETY (every arm): `res` points to `n` values of the field's type;
    // the SDK writes numbers into byte buffers, hence unaligned reads.
    #[allow(non_upper_case_globals)]
    match f.ftype {
        ss_plugin_field_type_FTYPE_STRING => unsafe {
            let out = store.alloc_slice_fill_copy(n, ptr::null::<c_char>());
            for (i, o) in out.iter_mut().enumerate() {
                let s = CStr::from_ptr(*f.res.str_.add(i)).to_bytes_with_nul();
                *o = store.alloc_slice_copy(s).as_ptr().cast();
            }
            f.res.str_ = out.as_mut_ptr();
        },
        ss_plugin_field_type_FTYPE_UINT64
        | ss_plugin_field_type_FTYPE_RELTIME
        | ss_plugin_field_type_FTYPE_ABSTIME => unsafe {
            let src = f.res.u64_;
            let out = store.alloc_slice_fill_with(n, |i| ptr::read_unaligned(src.add(i)));
            f.res.u64_ = out.as_mut_ptr();
        },
        ss_plugin_field_type_FTYPE_BOOL => unsafe {
            let src = f.res.boolean;
            let out = store.alloc_slice_fill_with(n, |i| ptr::read_unaligned(src.add(i)));
            f.res.boolean = out.as_mut_ptr();
        },
        ss_plugin_field_type_FTYPE_IPADDR | ss_plugin_field_type_FTYPE_IPNET => unsafe {
            let src = f.res.buf;
            let out = store.alloc_slice_fill_with(n, |i| {
                let b = ptr::read_unaligned(src.add(i));
                let bytes = std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.len as usize);
                ss_plugin_byte_buffer {
                    len: b.len,
                    ptr: store.alloc_slice_copy(bytes).as_ptr().cast(),
                }
            });
            f.res.buf = out.as_mut_ptr();
        },
        // a type kive has no field of: left as the SDK wrote it
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_tells_any_byte_apart() {
        let a: Vec<u8> = (0..=117u8).collect();
        assert!(same_bytes(&a, &a.clone()), "equal");
        for len in [0, 1, 7, 8, 9, 64, 117, 118] {
            assert!(same_bytes(&a[..len], &a[..len]), "equal prefixes of {len}");
        }
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x80;
            assert!(!same_bytes(&a, &b), "byte {i} changed");
        }
        assert!(!same_bytes(&a, &a[..117]), "another length");
    }

    #[test]
    fn event_number_0_keeps_a_calls_values_until_the_next_call_only() {
        // an address no instance has: this test's own
        let plugin = Box::into_raw(Box::new(0u8)).cast::<ss_plugin_t>();
        for _ in 0..10_000 {
            with_arena(plugin, 0, |store, _| {
                store.alloc([7u8; 1024]);
            });
        }
        let held = with_arena(plugin, 0, |store, _| store.allocated_bytes());
        assert!(
            held < 64 * 1024,
            "10,000 calls of event 0 left {held} bytes held: each call's values must go at the next"
        );
        // SAFETY: the box made above, freed once.
        drop(unsafe { Box::from_raw(plugin.cast::<u8>()) });
    }

    #[test]
    fn a_live_instance_keeps_its_arena_however_many_others_came_and_went() {
        let mut a = Arenas {
            tick: 0,
            all: Vec::new(),
        };
        let live = 1usize;
        a.of(live, 1).store.alloc(7u64);
        // instances made and destroyed (never used again), while the live
        // one goes on extracting
        for dead in 2..(2 + 10 * MAX_INSTANCES) {
            a.of(dead, 1);
            a.of(live, 1);
        }
        assert!(a.all.len() <= MAX_INSTANCES, "bounded");
        let kept = a.of(live, 1);
        assert!(
            kept.store.allocated_bytes() > 0,
            "the live instance's arena was never given up"
        );
    }
}
