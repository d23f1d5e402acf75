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
}

/// The decode of every text field against the decode as it was before the
/// one-buffer change (memchr to the NUL, then a lossy conversion, one
/// string per field), on records built to break it.
#[cfg(test)]
mod hostile {
    use super::super::{
        offsets, RawEvent, ARGS_LEN, COMM_LEN, EVENT_SIZE, EVENT_VERSION, PATH_LEN,
    };

    /// The texts as the decode before this change gave them.
    #[derive(Debug, PartialEq)]
    struct Old {
        comm: String,
        parent_comm: String,
        parent_exe: String,
        exe: String,
        cwd: String,
        args: Vec<String>,
    }

    fn old_c_str(field: &[u8]) -> String {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    }

    fn old_decode(r: &[u8]) -> Old {
        let len = |o: usize, max: usize| usize::from(u16::from_le_bytes([r[o], r[o + 1]])).min(max);
        let f = |o: usize, l: usize| &r[o..o + l];
        let args = f(offsets::ARGS, len(offsets::ARGS_LEN, ARGS_LEN));
        let args = args.strip_suffix(&[0]).unwrap_or(args);
        Old {
            comm: old_c_str(f(offsets::COMM, COMM_LEN)),
            parent_comm: old_c_str(f(offsets::PCOMM, COMM_LEN)),
            parent_exe: old_c_str(f(offsets::PEXE, len(offsets::PEXE_LEN, PATH_LEN))),
            exe: old_c_str(f(offsets::EXE, len(offsets::EXE_LEN, PATH_LEN))),
            cwd: old_c_str(f(offsets::CWD, len(offsets::CWD_LEN, PATH_LEN))),
            args: if args.is_empty() {
                Vec::new()
            } else {
                args.split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            },
        }
    }

    fn new_decode(r: &[u8]) -> Old {
        let e = RawEvent::decode(r).unwrap_or_else(|err| panic!("a valid header: {err}"));
        Old {
            comm: e.comm().to_owned(),
            parent_comm: e.parent_comm().to_owned(),
            parent_exe: e.parent_exe().to_owned(),
            exe: e.exe().to_owned(),
            cwd: e.cwd().to_owned(),
            args: e.args().iter().map(str::to_owned).collect(),
        }
    }

    /// A record with a valid header and the given text fields (bytes put at
    /// the field's start, lengths as given, whatever they say).
    fn record(fields: [(&[u8], u16); 6]) -> Vec<u8> {
        let mut r = vec![0u8; EVENT_SIZE];
        r[offsets::VERSION..offsets::VERSION + 2].copy_from_slice(&EVENT_VERSION.to_le_bytes());
        r[offsets::HOOK] = 4;
        let at = [
            (offsets::COMM, COMM_LEN, None),
            (offsets::PCOMM, COMM_LEN, None),
            (offsets::PEXE, PATH_LEN, Some(offsets::PEXE_LEN)),
            (offsets::EXE, PATH_LEN, Some(offsets::EXE_LEN)),
            (offsets::CWD, PATH_LEN, Some(offsets::CWD_LEN)),
            (offsets::ARGS, ARGS_LEN, Some(offsets::ARGS_LEN)),
        ];
        for ((bytes, len), (o, room, len_at)) in fields.into_iter().zip(at) {
            let n = bytes.len().min(room);
            r[o..o + n].copy_from_slice(&bytes[..n]);
            if let Some(l) = len_at {
                r[l..l + 2].copy_from_slice(&len.to_le_bytes());
            }
        }
        r
    }

    fn same(r: &[u8], what: &str) {
        assert_eq!(new_decode(r), old_decode(r), "{what}");
    }

    #[test]
    fn hostile_texts_decode_as_before() {
        let cases: [(&str, &[u8]); 18] = [
            ("empty", b""),
            ("a lone NUL", b"\0"),
            ("NUL-terminated ASCII", b"/usr/bin/cat\0"),
            ("no NUL at all", b"/usr/bin/cat"),
            ("NUL in the middle", b"/usr/b\0in/cat\0"),
            ("NUL at byte 7 and 8", b"0123456\0\0abc"),
            ("non-UTF-8", b"/tmp/\xff\xfe/bad\xc3\0"),
            ("non-ASCII after the NUL", b"/tmp/ok\0\xff\xff\xff\xff\xff"),
            ("non-ASCII before the NUL in one word", b"ab\xc3\xa9\0xyz"),
            ("valid UTF-8", "/tmp/caf\u{e9}/\u{1f600}\0".as_bytes()),
            ("a cut multi-byte sequence", b"abcdefg\xe2\x82"),
            ("0x01 after a NUL (borrow)", b"abc\0\x01\x01\x01\x01"),
            ("0x80 bytes", b"\x80\x80\x80\x80\x80\x80\x80\x80\0"),
            ("args with empty ones", b"cat\0\0/etc/\xffsecret\0\0last\0"),
            ("0x80 in a long path", b"/a/long/enough/path/\x80\x80\0"),
            (
                "0x7f and 0x01 in a long path",
                b"/a/long/enough/path/\x7f\x01\0",
            ),
            (
                "UTF-8 in a long path",
                "/a/long/enough/path/caf\u{e9}\0".as_bytes(),
            ),
            ("NUL in a long path", b"/a/long/enough/path\0/x\0"),
        ];
        for (what, bytes) in cases {
            for len in [
                0u16,
                1,
                bytes.len() as u16,
                bytes.len() as u16 + 3,
                300,
                u16::MAX,
            ] {
                let f = [(bytes, len); 6];
                same(&record(f), &format!("{what}, length {len}"));
                // the rest of a long field full of bytes
                let mut full = bytes.to_vec();
                full.resize(PATH_LEN, b'x');
                let f = [(&full[..], len); 6];
                same(&record(f), &format!("{what} then 'x's, length {len}"));
            }
        }
        // comm without a terminator: all sixteen bytes
        let r = record([
            (b"0123456789abcdef", 0),
            (b"\xff123456789abcde", 0),
            (b"", 0),
            (b"", 0),
            (b"", 0),
            (b"", 0),
        ]);
        same(&r, "16-byte comms");
    }

    #[test]
    fn random_fields_decode_as_before() {
        // bytes picked to hit every path: NUL, ASCII, 0x01 (borrows), 0x7f,
        // 0x80, lead and continuation bytes, 0xff
        const ALPHABET: &[u8] = b"\0\0a/\x01\x7f\x80\xc3\xa9\xe2\x82\xac\xf0\x9f\xffz";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3_000 {
            let mut fields: Vec<(Vec<u8>, u16)> = Vec::new();
            for _ in 0..6 {
                let n = (next() % 300) as usize;
                // mostly ASCII with a few others, or anything
                let wild = next() % 3 == 0;
                let bytes = (0..n)
                    .map(|_| {
                        let x = next();
                        if wild || x % 17 == 0 {
                            ALPHABET[(x >> 8) as usize % ALPHABET.len()]
                        } else {
                            b'a' + (x >> 8) as u8 % 26
                        }
                    })
                    .collect();
                let len = match next() % 4 {
                    0 => n as u16,
                    1 => (n as u16).saturating_add(1),
                    2 => (next() % 260) as u16,
                    _ => next() as u16,
                };
                fields.push((bytes, len));
            }
            let f: [(&[u8], u16); 6] = std::array::from_fn(|i| (&fields[i].0[..], fields[i].1));
            same(&record(f), &format!("round {round}: {fields:?}"));
        }
    }
}
