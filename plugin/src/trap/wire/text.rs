//! An event's texts (comm, parent comm, parent executable, executable,
//! working directory, argv) decoded from their fixed fields into ONE
//! string: one allocation per event instead of six, and one free on the
//! consumer's thread.
//!
//! In the common case a field's text is found in one pass (ASCII up to the
//! NUL where the kernel's length puts it; a comm eight bytes at a time up
//! to its NUL; a path's ASCII is not validated a second time); anything
//! else takes the general path (find the NUL, validate, replace invalid
//! bytes with `U+FFFD` as [`String::from_utf8_lossy`] does). Both give the
//! same text, byte for byte.

use std::fmt;

#[cfg(doc)]
use super::args::Args;
use super::args::ArgsRef;

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Where `field`'s first NUL is (its length without one), if every byte
/// before it is ASCII; `None` at a byte past ASCII before any NUL. One pass
/// over the field's text, eight bytes at a time (for short fields).
fn ascii_until_nul(field: &[u8]) -> Option<usize> {
    let mut words = field.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        // the lowest byte flagged here is the first zero byte: a byte at or
        // above 0x80 is never flagged, and a borrow only flags bytes above
        // a zero one
        let zero = w.wrapping_sub(LOW_BITS) & !w & HIGH_BITS;
        let high = w & HIGH_BITS;
        if zero != 0 {
            // the bytes below the first zero must all be ASCII
            let below = (zero & zero.wrapping_neg()) - 1;
            if high & below != 0 {
                return None;
            }
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        if high != 0 {
            return None;
        }
        at += 8;
    }
    for &b in words.remainder() {
        match b {
            0 => return Some(at),
            0x80.. => return None,
            _ => at += 1,
        }
    }
    Some(at)
}

/// Appends bytes as text: valid UTF-8 as it is, anything else with its
/// invalid bytes replaced (`U+FFFD`), as [`String::from_utf8_lossy`] does.
pub(super) fn push_text(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// Whether every byte is ASCII and none is NUL (bytes 1..=0x7f). No early
/// exit inside a chunk, so that the compiler checks a chunk's bytes side by
/// side (vector instructions).
fn ascii_without_nul(bytes: &[u8]) -> bool {
    // b in 1..=0x7f  <=>  b - 1 (wrapping) < 0x7f
    let worst = |c: &[u8]| c.iter().fold(0u8, |m, &b| m.max(b.wrapping_sub(1)));
    let mut chunks = bytes.chunks_exact(32);
    for c in chunks.by_ref() {
        if worst(c) >= 0x7f {
            return false;
        }
    }
    worst(chunks.remainder()) < 0x7f
}

/// `bytes` as text when every byte is ASCII and none is NUL (one pass, no
/// second validation).
fn ascii_text(bytes: &[u8]) -> Option<&str> {
    if !ascii_without_nul(bytes) {
        return None;
    }
    debug_assert!(bytes.is_ascii());
    // SAFETY: checked just above: every byte is in 1..=0x7f, i.e. ASCII,
    // and ASCII is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Fields up to this long (a comm: the text, then NULs to the end) are
/// read eight bytes at a time up to their first NUL.
const SHORT: usize = 16;

/// Appends a NUL-terminated string in a fixed field (all of it without a
/// NUL) as text. A path's field is cut at the kernel's length, which
/// counts the NUL: its text is every byte but the last, checked in one
/// pass (ASCII, no NUL inside). Anything else takes the general path.
pub(super) fn push_c_str(out: &mut String, field: &[u8]) {
    if field.len() > SHORT {
        let text = field.strip_suffix(&[0]).unwrap_or(field);
        if let Some(text) = ascii_text(text) {
            return out.push_str(text);
        }
    } else if let Some(end) = ascii_until_nul(field) {
        // a comm's few bytes: validated again (safely)
        return push_text(out, field.get(..end).unwrap_or_default());
    }
    let end = memchr::memchr(0, field).unwrap_or(field.len());
    push_text(out, field.get(..end).unwrap_or_default());
}

/// A NUL-terminated string in a fixed field, as text.
pub(super) fn c_str(field: &[u8]) -> String {
    let mut s = String::new();
    push_c_str(&mut s, field);
    s
}

/// An argv field: NUL-separated, one trailing NUL dropped, as text (a NUL
/// is never part of a multi-byte sequence: converting the whole is
/// converting each argument and joining them with NULs).
pub(super) fn push_argv(out: &mut String, raw: &[u8]) {
    push_text(out, raw.strip_suffix(&[0]).unwrap_or(raw));
}

/// The raw fields of a record's texts, each cut at its length.
pub(super) struct Fields<'a> {
    pub comm: &'a [u8],
    pub parent_comm: &'a [u8],
    pub parent_exe: &'a [u8],
    pub exe: &'a [u8],
    pub cwd: &'a [u8],
    pub args: &'a [u8],
}

/// An event's texts given one by one (events not read from a record: the
/// fanotify tier, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Texts<'a> {
    /// `task->comm`.
    pub comm: &'a str,
    /// The parent's comm.
    pub parent_comm: &'a str,
    /// The parent's executable path (empty if not captured).
    pub parent_exe: &'a str,
    /// Executable path (empty if not captured).
    pub exe: &'a str,
    /// Working directory (empty if not captured).
    pub cwd: &'a str,
    /// argv (empty if not captured; [`Args::borrowed`]).
    pub args: ArgsRef<'a>,
}

/// An event's six texts in one string: each part ends where the next
/// begins (`ends`), argv last.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EventText {
    buf: String,
    /// Where comm, parent comm, parent exe, exe and cwd end in `buf`.
    ends: [u32; 5],
}

impl EventText {
    /// From texts given one by one.
    pub fn new(t: Texts<'_>) -> Self {
        let parts = [t.comm, t.parent_comm, t.parent_exe, t.exe, t.cwd];
        let args = t.args.as_nul_separated();
        let mut buf =
            String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + args.len());
        let mut ends = [0; 5];
        for (end, part) in ends.iter_mut().zip(parts) {
            buf.push_str(part);
            *end = Self::end(&buf);
        }
        buf.push_str(args);
        Self { buf, ends }
    }

    /// Decoded from a record's fields (see the module's doc).
    pub(super) fn decode(f: Fields<'_>) -> Self {
        let fixed = [f.comm, f.parent_comm, f.parent_exe, f.exe, f.cwd];
        // room for ASCII texts (valid non-ASCII text is no longer; only
        // replaced bytes grow it)
        let room = fixed.iter().map(|p| p.len()).sum::<usize>() + f.args.len();
        let mut buf = String::with_capacity(room);
        let mut ends = [0; 5];
        for (end, field) in ends.iter_mut().zip(fixed) {
            push_c_str(&mut buf, field);
            *end = Self::end(&buf);
        }
        push_argv(&mut buf, f.args);
        Self { buf, ends }
    }

    /// The end of the text so far (texts are a few KiB at most: the
    /// fields are bounded; saturated past 4 GiB, never wrong in a way that
    /// could panic: [`EventText::part`] reads with `get`).
    fn end(buf: &str) -> u32 {
        u32::try_from(buf.len()).unwrap_or(u32::MAX)
    }

    /// Part `i` (0..=5, argv last).
    fn part(&self, i: usize) -> &str {
        let at = |j: usize| -> usize { self.ends.get(j).map_or(self.buf.len(), |&e| e as usize) };
        let start = if i == 0 { 0 } else { at(i - 1) };
        self.buf.get(start..at(i)).unwrap_or_default()
    }

    /// The texts one by one (to build another event's from).
    pub fn texts(&self) -> Texts<'_> {
        Texts {
            comm: self.comm(),
            parent_comm: self.parent_comm(),
            parent_exe: self.parent_exe(),
            exe: self.exe(),
            cwd: self.cwd(),
            args: self.args(),
        }
    }

    /// `task->comm`.
    pub fn comm(&self) -> &str {
        self.part(0)
    }

    /// The parent's comm.
    pub fn parent_comm(&self) -> &str {
        self.part(1)
    }

    /// The parent's executable path as the parent sees it (empty if not
    /// captured).
    pub fn parent_exe(&self) -> &str {
        self.part(2)
    }

    /// Executable path as the process sees it (empty if not captured).
    pub fn exe(&self) -> &str {
        self.part(3)
    }

    /// Working directory as the process sees it (empty if not captured).
    pub fn cwd(&self) -> &str {
        self.part(4)
    }

    /// argv, possibly truncated (empty if not captured).
    pub fn args(&self) -> ArgsRef<'_> {
        ArgsRef::new(self.part(5))
    }
}

impl fmt::Debug for EventText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventText")
            .field("comm", &self.comm())
            .field("parent_comm", &self.parent_comm())
            .field("parent_exe", &self.parent_exe())
            .field("exe", &self.exe())
            .field("cwd", &self.cwd())
            .field("args", &self.args())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Args;
    use super::*;

    #[test]
    fn parts_come_back_as_given() {
        let args = Args::from_parts(&["cat", "/etc/secret"]);
        let t = EventText::new(Texts {
            comm: "cat",
            parent_comm: "",
            parent_exe: "/bin/bash",
            exe: "/usr/bin/caf\u{e9}",
            cwd: "/",
            args: args.borrowed(),
        });
        assert_eq!(t.comm(), "cat");
        assert_eq!(t.parent_comm(), "");
        assert_eq!(t.parent_exe(), "/bin/bash");
        assert_eq!(t.exe(), "/usr/bin/caf\u{e9}");
        assert_eq!(t.cwd(), "/");
        assert_eq!(t.args(), ["cat", "/etc/secret"]);
        assert_eq!(EventText::new(t.texts()), t, "built again from its texts");
        let empty = EventText::new(Texts::default());
        assert_eq!(empty, EventText::default(), "no text is the default");
        assert!(empty.args().is_empty() && empty.comm().is_empty());
    }

    #[test]
    fn only_bytes_1_to_0x7f_pass_as_ascii_without_nul() {
        for len in [1, 31, 32, 33, 64] {
            for at in 0..len {
                for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let ok = (1..=0x7f).contains(&b);
                    assert_eq!(
                        ascii_without_nul(&bytes),
                        ok,
                        "byte {b:#x} at {at} of {len}"
                    );
                    assert_eq!(
                        ascii_text(&bytes).is_some(),
                        ok,
                        "byte {b:#x} at {at} of {len}: as text"
                    );
                }
            }
        }
        assert_eq!(ascii_text(b""), Some(""), "nothing is text");
    }
}

/// The decode of every text field against the decode as it was before the
/// one-buffer change (memchr to the NUL, then a lossy conversion, one
/// string per field), on records built to break it.
#[cfg(test)]
#[path = "text_hostile_tests.rs"]
mod hostile;
