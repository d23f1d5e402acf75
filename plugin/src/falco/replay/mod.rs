//! The replay source: KiveAlert v1 JSON lines (what `kive run` prints)
//! read from a file and emitted as kive events, for writing and testing
//! rules without root, eBPF or a cluster.

mod borrowed;
mod prefetch;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::payload::{alert_parts, encode_parts, Numbers, Parts};
use super::FalcoError;
use crate::alert::KiveAlert;
use borrowed::AlertRef;
pub use prefetch::{Chunk, Fetched, Prefetch};

/// Parses one JSON line into an alert.
pub fn parse_line(line: &[u8]) -> Result<KiveAlert, serde_json::Error> {
    serde_json::from_slice(line)
}

/// Wall-clock nanoseconds of an RFC 3339 timestamp (0 if it does not
/// parse), as [`KiveAlert::timestamp_ns`].
pub fn timestamp_ns(ts: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(|n| n.max(0) as u64)
        .unwrap_or(0)
}

/// Parses one JSON line and encodes it as a kive payload into `out`
/// without building a [`KiveAlert`]: strings are borrowed from the line
/// (the same keys, types and defaults as [`KiveAlert`]'s serde mapping).
/// Returns the alert's timestamp in wall-clock ns.
pub fn encode_line(line: &[u8], out: &mut Vec<u8>) -> Result<u64, FalcoError> {
    let a: AlertRef<'_> = serde_json::from_slice(line).map_err(FalcoError::Json)?;
    let parts = alert_parts!(a);
    encode_parts(
        &parts,
        [
            &mut a.custom_metadata.iter(),
            &mut a.pod.labels.iter(),
            &mut a.pod.namespace_labels.iter(),
        ],
        out,
    )?;
    Ok(timestamp_ns(&a.timestamp))
}

/// Longest replay line kept in memory (1 MiB; an alert is a few KiB).
pub const MAX_LINE: usize = 1 << 20;

/// Reads alerts line by line; blank lines are skipped, a malformed line
/// (or one longer than [`MAX_LINE`]) is an error naming the file and line
/// number and does not stop the rest.
#[derive(Debug)]
pub struct ReplayReader {
    path: PathBuf,
    reader: BufReader<File>,
    /// Longest line read into memory; a longer one is skipped as malformed.
    max_line: usize,
    line: u64,
    read: u64,
    total: u64,
    buf: Vec<u8>,
    done: bool,
}

impl ReplayReader {
    /// Opens a file of KiveAlert JSON lines.
    pub fn open(path: &Path) -> Result<Self, FalcoError> {
        let io = |source| FalcoError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let total = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, file),
            max_line: MAX_LINE,
            line: 0,
            read: 0,
            total,
            buf: Vec::with_capacity(4096),
            done: false,
        })
    }

    /// The next alert, a malformed line, or `None` at the end.
    pub fn next_alert(&mut self) -> Option<Result<KiveAlert, FalcoError>> {
        let line = match self.next_line()? {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        Some(
            parse_line(&self.buf[line]).map_err(|e| FalcoError::Malformed {
                path: self.path.display().to_string(),
                line: self.line,
                message: e.to_string(),
            }),
        )
    }

    /// Reads past the end of the current line without keeping it; returns
    /// the bytes skipped (with the newline).
    fn skip_rest_of_line(&mut self) -> std::io::Result<usize> {
        let mut skipped = 0;
        loop {
            let avail = self.reader.fill_buf()?;
            if avail.is_empty() {
                return Ok(skipped);
            }
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(skipped + i + 1);
                }
                None => {
                    let n = avail.len();
                    self.reader.consume(n);
                    skipped += n;
                }
            }
        }
    }

    /// The byte range in `buf` of the next non-blank line (trimmed).
    fn next_line(&mut self) -> Option<Result<std::ops::Range<usize>, FalcoError>> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            let limit = self.max_line as u64 + 1;
            let res = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .and_then(|n| {
                    if self.buf.len() > self.max_line && !self.buf.ends_with(b"\n") {
                        Ok((n + self.skip_rest_of_line()?, true))
                    } else {
                        Ok((n, false))
                    }
                });
            match res {
                Ok((0, _)) => {
                    self.done = true;
                    return None;
                }
                Ok((n, too_long)) => {
                    self.read += n as u64;
                    self.line += 1;
                    if too_long {
                        return Some(Err(FalcoError::Malformed {
                            path: self.path.display().to_string(),
                            line: self.line,
                            message: format!("longer than {} bytes", self.max_line),
                        }));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(FalcoError::Io {
                        path: self.path.display().to_string(),
                        source: e,
                    }));
                }
            }
            let start = self.buf.len() - self.buf.trim_ascii_start().len();
            let end = self.buf.trim_ascii_end().len();
            if start >= end {
                continue;
            }
            return Some(Ok(start..end));
        }
    }

    /// The next line encoded as a kive payload into `out` (see
    /// [`encode_line`]): its timestamp, a malformed line, or `None` at the
    /// end.
    pub fn next_encoded(&mut self, out: &mut Vec<u8>) -> Option<Result<u64, FalcoError>> {
        let line = match self.next_line()? {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        Some(encode_line(&self.buf[line], out).map_err(|e| match e {
            FalcoError::Json(e) => FalcoError::Malformed {
                path: self.path.display().to_string(),
                line: self.line,
                message: e.to_string(),
            },
            other => other,
        }))
    }

    /// Lines read so far.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Fraction of the file read, 0.0 to 1.0.
    pub fn progress(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.read as f64 / self.total as f64).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn malformed_lines_are_reported_by_number_and_the_rest_replays() {
        let sample: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../test_files/seed_sample_alert.json"
        ))
        .expect("sample");
        let line = sample.to_string();
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        writeln!(
            f,
            "{line}\n\n{{not json\n{line}\n{{\"kive-alert-version\":\"v1\"}}\n{line}"
        )
        .expect("write");
        let mut r = ReplayReader::open(f.path()).expect("opens");
        let mut ok = 0;
        let mut errors = Vec::new();
        while let Some(item) = r.next_alert() {
            match item {
                Ok(a) => {
                    assert_eq!(a.policy_name, "kive-sample-policy");
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        assert_eq!(ok, 3);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains(": line 3: "), "{}", errors[0]);
        assert!(errors[1].contains(": line 5: "), "{}", errors[1]);
        assert!(errors[1].contains("missing field"), "{}", errors[1]);
        assert!((r.progress() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn an_overlong_line_is_skipped_as_malformed_without_being_kept() {
        let line = include_str!("../../../../test_files/kive_alerts.jsonl")
            .lines()
            .next()
            .expect("a line");
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        let long = "x".repeat(10_000);
        writeln!(f, "{line}\n{long}\n{line}").expect("write");
        let mut r = ReplayReader::open(f.path()).expect("opens");
        r.max_line = 4096;
        let got: Vec<_> = std::iter::from_fn(|| r.next_alert()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].is_ok() && got[2].is_ok(), "{got:?}");
        let e = got[1].as_ref().expect_err("the long line").to_string();
        assert!(
            e.contains(": line 2: ") && e.contains("longer than 4096"),
            "{e}"
        );
        assert!(
            r.buf.capacity() < 10_000,
            "the long line was never buffered whole"
        );
        assert!((r.progress() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn borrowed_encoding_equals_encoding_the_parsed_alert() {
        let mut lines: Vec<String> = Vec::new();
        for f in ["kive_alerts.jsonl", "kive_run_host.jsonl"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../test_files")
                .join(f);
            let text = std::fs::read_to_string(p).expect("test file");
            lines.extend(text.lines().map(str::to_string));
        }
        lines.push(
            r#"{"kive-alert-version":"v1","kive-policy-name":"p\u00e9\n","timestamp":"bad","metadata":{"path":"/a\"b","inode":1,"mask":4,"kernel-id":"k","extra":1},"custom-metadata":{"z":"1","a":"2","z":"3"},"pod":{"labels":{"b":"x","a":"y"}},"unknown":{"deep":[1,2]}}"#
                .into(),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for line in &lines {
            let alert = parse_line(line.as_bytes()).expect("parses");
            crate::falco::payload::encode(&alert, &mut a).expect("encodes");
            let ts = encode_line(line.as_bytes(), &mut b).expect("encodes");
            if line.contains("\"process\"") {
                assert_eq!(a, b, "{line}");
            } else {
                // the only difference: ids absent, not 0
                let n = crate::falco::Decoded::decode(&b).expect("decodes");
                let n = n.numbers();
                assert_eq!((n.pid, n.tgid, n.uid, n.gid), (None, None, None, None));
                assert_eq!(
                    crate::falco::payload::decode_alert(&a).expect("decodes"),
                    crate::falco::payload::decode_alert(&b).expect("decodes"),
                    "{line}"
                );
            }
            assert_eq!(ts, alert.timestamp_ns(), "{line}");
        }
        for bad in [
            "{}",
            "[1]",
            r#"{"kive-alert-version":"v1","kive-policy-name":"p","timestamp":"t","metadata":{"path":"/a","inode":-1,"mask":4,"kernel-id":"k"}}"#,
            r#"{"kive-alert-version":"v1","kive-policy-name":"p","timestamp":"t","metadata":{"path":"/a","inode":1,"mask":4,"kernel-id":"k"},"custom-metadata":{"a":1}}"#,
            r#"{"kive-alert-version":"v1","kive-policy-name":"p","timestamp":"t","metadata":{"path":"/a","inode":1,"mask":4,"kernel-id":"k"},"pod":null}"#,
        ] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad}");
            assert!(encode_line(bad.as_bytes(), &mut b).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let e = ReplayReader::open(Path::new("/nonexistent/kive.jsonl")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/kive.jsonl"), "{e}");
    }
}
