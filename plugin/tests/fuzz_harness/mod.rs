//! A small mutation fuzzer on stable Rust: `arbtest` feeds random bytes,
//! [`mutate`] turns them into an input derived from a corpus entry (bit
//! flips, interesting integers, deletions, duplications, insertions of
//! random bytes or dictionary tokens, splices of two entries, truncation),
//! and the target runs on it. A panic saves the input under
//! `$CARGO_TARGET_TMPDIR/fuzz-crashes/` and fails the test with arbtest's
//! seed (`ARBTEST_SEED=<seed>` replays it).
//!
//! Budget: `KIVE_FUZZ_MS` milliseconds per target (default 1000, what
//! `make test` runs); `make fuzz` sets it high.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbitrary::{Result, Unstructured};

/// One fuzz target: a decoder of outside input that must never panic.
pub struct Target {
    /// Name; also the corpus directory `plugin/fuzz-corpus/<name>/`.
    pub name: &'static str,
    /// Extra seed files or directories, relative to the repository root.
    pub seeds: &'static [&'static str],
    /// Tokens the mutator inserts (syntax of the format).
    pub dict: &'static [&'static [u8]],
    /// Seeds computed from the corpus (e.g. encodings of other targets' inputs).
    pub derived: fn() -> Vec<Vec<u8>>,
    /// The code under test.
    pub run: fn(&[u8]),
}

/// No derived seeds.
pub fn none() -> Vec<Vec<u8>> {
    Vec::new()
}

impl Target {
    /// A target with only its committed corpus.
    pub const fn new(name: &'static str, dict: &'static [&'static [u8]], run: fn(&[u8])) -> Self {
        Self {
            name,
            seeds: &[],
            dict,
            derived: none,
            run,
        }
    }

    /// Adds seed files or directories (relative to the repository root).
    pub const fn seeds(mut self, seeds: &'static [&'static str]) -> Self {
        self.seeds = seeds;
        self
    }

    /// Adds computed seeds.
    pub const fn derived(mut self, derived: fn() -> Vec<Vec<u8>>) -> Self {
        self.derived = derived;
        self
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the repository")
        .to_path_buf()
}

/// The committed corpus directory of a target.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-corpus")
        .join(name)
}

fn read_seeds(path: &Path, out: &mut Vec<Vec<u8>>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            read_seeds(&p, out);
        }
    } else {
        out.push(std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())));
    }
}

/// Every seed of a target: its committed corpus, its extra seed files, and
/// its derived seeds. Panics when the committed corpus is missing or empty.
pub fn corpus(t: &Target) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let dir = corpus_dir(t.name);
    if std::env::var_os("KIVE_FUZZ_SAVE_DERIVED").is_some() {
        // (re)writes the committed binary seeds from their generators
        for (i, seed) in (t.derived)().iter().enumerate() {
            let p = dir.join(format!("derived-{i}.bin"));
            std::fs::write(&p, seed).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        }
    }
    read_seeds(&dir, &mut out);
    assert!(!out.is_empty(), "{}: empty corpus", dir.display());
    for s in t.seeds {
        read_seeds(&repo().join(s), &mut out);
    }
    out.extend((t.derived)());
    out
}

const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

fn index(u: &mut Unstructured<'_>, len: usize) -> Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    u.int_in_range(0..=len - 1)
}

/// One input: a corpus entry (or raw bytes) with a few mutations.
pub fn mutate(u: &mut Unstructured<'_>, corpus: &[Vec<u8>], dict: &[&[u8]]) -> Result<Vec<u8>> {
    if corpus.is_empty() || u.ratio(1, 10)? {
        return u.arbitrary::<Vec<u8>>();
    }
    let mut d = corpus[index(u, corpus.len())?].clone();
    let rounds = u.int_in_range(1..=8)?;
    for _ in 0..rounds {
        let at = index(u, d.len() + 1)?.min(d.len());
        match u.int_in_range(0..=8)? {
            0 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] ^= 1 << u.int_in_range(0..=7)?;
            }
            1 if !d.is_empty() => {
                let v = INTERESTING[index(u, INTERESTING.len())?];
                let width = [1usize, 2, 4, 8][index(u, 4)?];
                let bytes = v.to_le_bytes();
                for (k, b) in bytes.iter().take(width).enumerate() {
                    if let Some(x) = d.get_mut(at + k) {
                        *x = *b;
                    }
                }
            }
            2 => {
                let n = u.int_in_range(1..=64)?;
                d.drain(at..(at + n).min(d.len()));
            }
            3 if !d.is_empty() => {
                let start = at.min(d.len() - 1);
                let end = (start + u.int_in_range(1..=256)?).min(d.len());
                let copy = d[start..end].to_vec();
                let to = index(u, d.len() + 1)?.min(d.len());
                d.splice(to..to, copy);
            }
            4 => {
                let n = u.int_in_range(1..=16)?;
                let bytes = u.bytes(n)?.to_vec();
                d.splice(at..at, bytes);
            }
            5 if !dict.is_empty() => {
                let tok = dict[index(u, dict.len())?];
                d.splice(at..at, tok.iter().copied());
            }
            6 => {
                let other = &corpus[index(u, corpus.len())?];
                let from = index(u, other.len() + 1)?.min(other.len());
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            7 => d.truncate(at),
            _ => {}
        }
    }
    Ok(d)
}

/// Where inputs that made a target panic are saved.
pub fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes")
}

fn save_crash(name: &str, input: &[u8]) -> PathBuf {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let dir = crash_dir();
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{name}-{:016x}", h.finish()));
    let _ = std::fs::write(&p, input);
    p
}

/// Runs a target on one input; a panic saves the input first.
pub fn run_one(t: &Target, input: &[u8]) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| (t.run)(input))) {
        let saved = save_crash(t.name, input);
        eprintln!(
            "fuzz target {} panicked; input saved to {} (copy it into {} once fixed)",
            t.name,
            saved.display(),
            corpus_dir(t.name).display()
        );
        resume_unwind(p);
    }
}

/// Milliseconds of mutation per target.
pub fn budget() -> Duration {
    let ms = std::env::var("KIVE_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    Duration::from_millis(ms)
}

/// The whole run of a target: every corpus input as is, then mutations
/// for [`budget`]. Returns the number of inputs run.
pub fn fuzz(t: &Target) -> u64 {
    let corpus = corpus(t);
    for input in &corpus {
        run_one(t, input);
    }
    let mut runs = corpus.len() as u64;
    let runs_ref = &mut runs;
    arbtest::arbtest(|u| {
        let input = mutate(u, &corpus, t.dict)?;
        run_one(t, &input);
        *runs_ref += 1;
        Ok(())
    })
    .size_max(4096)
    .budget(budget())
    .run();
    runs
}
