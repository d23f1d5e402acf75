//! The one-line human format of an alert (`kive run --format text`,
//! Falco's `%evt.plugininfo`), and [`escape`]: the one escaping of outside
//! strings (paths, comm, argv, policy names) in everything kive prints.

use std::borrow::Cow;
use std::fmt::Write;

use super::kive_alert::{access_names, KiveAlert};

/// Whether `c` must not reach a terminal or a log line as it is: C0
/// controls (newline, CR, ESC, ...), DEL, C1 controls, the Unicode line and
/// paragraph separators, and the bidirectional overrides and isolates
/// (which reorder what a reader sees). The backslash too, so that an
/// escape in the output always comes from kive.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character of [`needs_escape`] written as an escape
/// (`\n`, `\r`, `\t`, `\\`, `\x1b`, `\u{85}`): the result is one line and
/// shows what the string holds. Borrowed when nothing needed escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A value of the text line: [`escape`]d, and quoted (`"..."`, with `\"`)
/// when it holds a space, `=` or `"`, so that no value can forge a
/// `key=value` of the line either (a binary named `x pod=kube-system/...`).
pub fn value(s: &str) -> Cow<'_, str> {
    let e = escape(s);
    if e.is_empty() || !e.contains([' ', '=', '"']) {
        return e;
    }
    Cow::Owned(format!("\"{}\"", e.replace('"', "\\\"")))
}

/// `timestamp policy=… path=… access=… pid=… uid=… comm=… binary=…`, or
/// for a loss report `timestamp loss ring=… queue=… limited=… node=…`.
/// Every string from outside goes through [`value`].
pub fn to_text(a: &KiveAlert) -> String {
    let v = value;
    if let Some(loss) = &a.metadata.loss {
        return format!(
            "{} loss ring={} queue={} limited={} node={}",
            v(&a.timestamp),
            loss.ring,
            loss.queue,
            loss.limited,
            v(&a.node.name)
        );
    }
    let mut s = format!(
        "{} policy={} path={} access={} action={} pid={} uid={} gid={} comm={} binary={}",
        v(&a.timestamp),
        v(&a.policy_name),
        v(&a.metadata.path),
        access_names(a.metadata.mask as u32).join(","),
        if a.metadata.action.is_empty() {
            Cow::Borrowed("audit")
        } else {
            v(&a.metadata.action)
        },
        a.process.tgid,
        a.process.uid,
        a.process.gid,
        v(&a.process.comm),
        v(&a.process.binary),
    );
    if !a.process.flags.is_empty() {
        let _ = write!(s, " flags={}", v(&a.process.flags.join(",")));
    }
    if let Some(n) = a.metadata.suppressed {
        let _ = write!(s, " suppressed={n}");
    }
    if !a.pod.name.is_empty() {
        let _ = write!(
            s,
            " pod={}/{} container={}",
            v(&a.pod.namespace),
            v(&a.pod.name),
            v(&a.pod.container.name)
        );
    }
    if !a.metadata.owner.is_empty() {
        let _ = write!(s, " owner={}", v(&a.metadata.owner));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape("/usr/bin/cat"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("del\x7f nul\0"), "del\\x7f nul\\x00");
        assert_eq!(
            escape("c1\u{85}ls\u{2028}rlo\u{202e}"),
            "c1\\u{85}ls\\u{2028}rlo\\u{202e}"
        );
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("é ü 日本"), "é ü 日本", "printable unicode stays");
    }

    #[test]
    fn values_with_spaces_or_equals_are_quoted() {
        assert_eq!(value("cat"), "cat");
        assert_eq!(value("x pod=a/b"), "\"x pod=a/b\"");
        assert_eq!(value("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(value(""), "");
    }

    #[test]
    fn a_forged_line_in_a_binary_name_stays_on_one_line() {
        let mut a = KiveAlert {
            timestamp: "2026-01-01T00:00:00Z".into(),
            policy_name: "real".into(),
            ..Default::default()
        };
        a.process.comm = "x\n2030-01-01T".into();
        a.process.binary =
            "/tmp/x\n2030-01-01T00:00:00Z policy=forged path=/etc/shadow access=read".into();
        let t = to_text(&a);
        assert_eq!(t.lines().count(), 1, "{t}");
        assert!(!t.contains("\n2030"), "{t}");
        assert!(t.starts_with("2026-01-01T00:00:00Z policy=real "), "{t}");
        assert!(
            t.contains("binary=\"/tmp/x\\n2030-01-01T00:00:00Z policy=forged"),
            "{t}"
        );
    }
}
