//! A process's argv as captured: one string, the arguments NUL-separated
//! (kept in the event's one text buffer, not one string per argument).

use std::borrow::Cow;

/// argv, possibly truncated; empty = not captured. Each argument is text
/// (invalid UTF-8 replaced), and none holds a NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args(String);

/// An argv borrowed from where it is kept (an event's texts, an [`Args`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArgsRef<'a>(&'a str);

impl Args {
    /// The NUL-separated argv of a record (one trailing NUL dropped, the
    /// last argument possibly cut short); invalid bytes replaced (`U+FFFD`)
    /// as a lossy conversion of each argument would.
    pub fn from_raw(raw: &[u8]) -> Self {
        let mut s = String::new();
        super::text::push_argv(&mut s, raw);
        Self(s)
    }

    /// From separate arguments (none may hold a NUL: it is cut there).
    /// One empty argument gives the empty value, "not captured", as a
    /// record holding one NUL decodes to.
    pub fn from_parts<S: AsRef<str>>(parts: &[S]) -> Self {
        let mut s = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                s.push('\0');
            }
            let p = p.as_ref();
            s.push_str(p.split('\0').next().unwrap_or(p));
        }
        Self(s)
    }

    /// Borrowed.
    pub fn borrowed(&self) -> ArgsRef<'_> {
        ArgsRef(&self.0)
    }

    /// Whether no argument was captured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The arguments, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.borrowed().iter()
    }

    /// The arguments joined with spaces (one argument: borrowed); `None`
    /// when none was captured.
    pub fn joined(&self) -> Option<Cow<'_, str>> {
        self.borrowed().joined()
    }
}

impl<'a> ArgsRef<'a> {
    /// The arguments separated by NULs (as [`Args`] keeps them).
    pub(super) fn new(nul_separated: &'a str) -> Self {
        Self(nul_separated)
    }

    /// Whether no argument was captured.
    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    /// The arguments, in order.
    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        (!self.0.is_empty())
            .then(|| self.0.split('\0'))
            .into_iter()
            .flatten()
    }

    /// The arguments as kept: NUL-separated (empty = not captured).
    pub fn as_nul_separated(self) -> &'a str {
        self.0
    }

    /// The arguments joined with spaces (one argument: borrowed); `None`
    /// when none was captured.
    pub fn joined(self) -> Option<Cow<'a, str>> {
        if self.0.is_empty() {
            None
        } else if self.0.contains('\0') {
            Some(Cow::Owned(self.0.replace('\0', " ")))
        } else {
            Some(Cow::Borrowed(self.0))
        }
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Args {
    fn eq(&self, other: &[S]) -> bool {
        self.borrowed() == *other
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Args {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for ArgsRef<'_> {
    fn eq(&self, other: &[S]) -> bool {
        self.iter().eq(other.iter().map(AsRef::as_ref))
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for ArgsRef<'_> {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_decodes_as_splitting_and_converting_each_argument_would() {
        let old = |raw: &[u8]| -> Vec<String> {
            let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
            if raw.is_empty() {
                return Vec::new();
            }
            raw.split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        for raw in [
            &b""[..],
            b"\0",
            b"\0\0",
            b"cat",
            b"cat\0",
            b"cat\0/secret.txt\0",
            b"a\0b",
            b"cat\0/etc/\xffsecret\0\0last\0",
            b"x\xc3\0\xa9y\0",
            b"\xe2\x82\0\xac",
            "caf\u{e9}\0\u{1f600}".as_bytes(),
        ] {
            let a = Args::from_raw(raw);
            let want = old(raw);
            assert_eq!(a.iter().collect::<Vec<_>>(), want, "{raw:?}");
            assert_eq!(a.is_empty(), want.is_empty(), "{raw:?}");
            assert_eq!(
                a.joined().map(Cow::into_owned),
                (!want.is_empty()).then(|| want.join(" ")),
                "{raw:?} joined"
            );
            assert_eq!(Args::from_parts(&want), a, "{raw:?} from its parts");
        }
        assert!(
            matches!(Args::from_raw(b"one").joined(), Some(Cow::Borrowed("one"))),
            "one argument is borrowed"
        );
        assert_eq!(Args::from_parts(&["a\0b", "c"]), ["a", "c"], "cut at a NUL");
    }
}
