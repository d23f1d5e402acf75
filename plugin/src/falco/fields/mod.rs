//! The fields Falco rules, outputs and Falcosidekick can use (`kive.*`).
//!
//! Every extraction call decodes its event once: the first field stores
//! the [`Decoded`] header in the per-call context and every field slices
//! its value out of the event buffer. Empty strings and unset optional
//! numbers are "no value" (`<NA>` in outputs), never empty strings.
//! Strings come out with control characters escaped
//! ([`crate::alert::text::escape`]): Falco prints them in its outputs.
//!
//! - [`table`]: the extractors and the field table Falco gets;
//! - [`derived`]: values computed from several slots (foreign access,
//!   Falco's short container id);
//! - [`markdown`]: the table as Markdown (the README's fields table).

use std::ffi::CString;

use anyhow::Error;
use falco_plugin::event::events::Event;
use falco_plugin::extract::ExtractRequest;

use super::payload::{Decoded, KiveAnyEvent, Numbers, Slot};
use super::KivePlugin;
use crate::alert::text::escape;
use crate::alert::ProcessFlags;
/// Per-extraction-call context: the decoded header of the event.
pub type Context = Option<Decoded>;

/// Runs `f` on the event's payload and its decoded header; no value
/// (`R::default()`) for another plugin's async event.
fn with<R: Default>(
    req: ExtractRequest<'_, '_, '_, '_, KivePlugin>,
    f: impl FnOnce(&[u8], &Decoded) -> R,
) -> Result<R, Error> {
    let event: Event<KiveAnyEvent<'_>> = req.event.event()?;
    let Some(data) = event.params.kive_payload() else {
        return Ok(R::default());
    };
    let decoded = match req.context {
        Some(d) => d,
        slot => slot.insert(Decoded::decode(data)?),
    };
    Ok(f(data, decoded))
}

/// A C string of bytes, cut at an embedded NUL.
fn cstring(b: &[u8]) -> CString {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let mut v = Vec::with_capacity(end + 1); // room for the NUL: no realloc
    v.extend_from_slice(&b[..end]);
    // SAFETY: `b[..end]` holds no NUL byte (end is the first NUL, if any).
    unsafe { CString::from_vec_unchecked(v) }
}

fn text<const S: usize>(
    _p: &mut KivePlugin,
    req: ExtractRequest<'_, '_, '_, '_, KivePlugin>,
) -> Result<Option<CString>, Error> {
    with(req, |data, d| d.text(data, Slot::ALL[S]).map(escaped))
}

/// Nearly every value: printable ASCII without a backslash, nothing to
/// replace or escape, and no NUL to cut at (one pass, one copy).
fn plain(b: &[u8]) -> bool {
    // no early exit: the loop runs on whole vectors of bytes
    b.iter()
        .fold(true, |ok, &c| ok & (0x20..0x7f).contains(&c) & (c != b'\\'))
}

/// A string slot with control characters escaped (an executable named
/// `x\n...` cannot add a line to a Falco output); invalid UTF-8 is
/// replaced, never passed on.
fn escaped(b: &[u8]) -> CString {
    if plain(b) {
        let mut v = Vec::with_capacity(b.len() + 1); // room for the NUL
        v.extend_from_slice(b);
        // SAFETY: printable ASCII holds no NUL byte.
        return unsafe { CString::from_vec_unchecked(v) };
    }
    cstring(escape(&String::from_utf8_lossy(b)).as_bytes())
}

/// One `process.flags` bit, on an access (no value on a loss report).
fn process_flag(
    req: ExtractRequest<'_, '_, '_, '_, KivePlugin>,
    bit: u32,
) -> Result<Option<bool>, Error> {
    with(req, |data, d| {
        d.loss(data)
            .is_none()
            .then(|| ProcessFlags(d.numbers().process_flags.unwrap_or(0)).has(bit))
    })
}

/// One count of a loss report (no value on an access).
fn loss(
    req: ExtractRequest<'_, '_, '_, '_, KivePlugin>,
    f: impl FnOnce([u64; 3]) -> u64,
) -> Result<Option<u64>, Error> {
    with(req, |data, d| d.loss(data).map(f))
}

macro_rules! s {
    ($slot:ident) => {
        &text::<{ Slot::$slot as usize }>
    };
}

fn num(
    req: ExtractRequest<'_, '_, '_, '_, KivePlugin>,
    f: impl FnOnce(&Numbers) -> Option<u64>,
) -> Result<Option<u64>, Error> {
    with(req, |_, d| f(d.numbers()))
}

fn pair(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(k.len() + v.len() + 1);
    s.extend_from_slice(k);
    s.push(b'=');
    s.extend_from_slice(v);
    s
}

fn pairs<'a>(it: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<CString> {
    it.map(|(k, v)| escaped(&pair(k, v))).collect()
}

fn joined<'a>(it: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<CString> {
    let parts: Vec<Vec<u8>> = it.map(|(k, v)| pair(k, v)).collect();
    (!parts.is_empty()).then(|| escaped(&parts.join(&b","[..])))
}

mod derived;
pub mod direct;
mod markdown;
mod numbers;
mod table;

pub use derived::{foreign, short_container_id};
pub use markdown::fields_markdown;
pub(in crate::falco) use table::FIELDS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printable_ascii_shortcut_escapes_as_the_full_path_does() {
        let slow = |b: &[u8]| cstring(escape(&String::from_utf8_lossy(b)).as_bytes());
        let mut cases: Vec<Vec<u8>> = (0u8..=255).map(|c| vec![b'a', c, b'z']).collect();
        cases.extend([
            b"".to_vec(),
            b"/etc/secret".to_vec(),
            b"x\\n".to_vec(),
            b"nul\0cut".to_vec(),
            b"\xff\xfe".to_vec(),
            "\u{202e}rtl".as_bytes().to_vec(),
            "caf\u{e9}\u{85}".as_bytes().to_vec(),
            vec![b'p'; 5000],
        ]);
        for b in cases {
            assert_eq!(escaped(&b), slow(&b), "escaping {b:?}");
        }
    }
}
