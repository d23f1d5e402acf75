//! What the engine bench and the VM BPF-stats bench arm: the files they
//! open (one never armed, one armed and pinned) and trap keys that match
//! no file. Included with `#[path]` (a bench is its own crate), beside
//! `open_loop.rs`, whose [`pin_file`](super::open_loop::pin_file) it uses.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use kive::trap::{Engine, TrapKey, TrapValue};

use super::open_loop::{pin_file, Rng};

/// An audit trap (never blocks, no conditions) with id `trap_id`.
pub fn audit(trap_id: u32) -> TrapValue {
    TrapValue {
        trap_id,
        block: false,
        conditions: 0,
    }
}

/// The files a bench opens.
pub struct BenchFiles {
    _tmp: Option<tempfile::TempDir>,
    /// Where they are.
    pub dir: PathBuf,
    /// Opened in the open+close loops; never armed.
    pub free: PathBuf,
    /// Armed in every configuration.
    pub trapped: PathBuf,
    /// The trapped file's key.
    pub trapped_key: TrapKey,
    /// The trapped file's `O_PATH` pin (the fanotify tier marks the file).
    pub trapped_pin: OwnedFd,
}

impl BenchFiles {
    /// Writes both files in `dir`, or in a new temp dir named `prefix…`
    /// (removed on drop), and pins the trapped one.
    pub fn make(dir: Option<&Path>, prefix: &str) -> Result<Self, String> {
        let (tmp, dir) = match dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .map_err(|e| format!("creating a temp dir: {e}"))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let free = dir.join("untrapped.txt");
        let trapped = dir.join("trapped.txt");
        for p in [&free, &trapped] {
            std::fs::write(p, b"kive bench\n")
                .map_err(|e| format!("writing {}: {e}", p.display()))?;
        }
        let (trapped_pin, trapped_key) = pin_file(&trapped)?;
        Ok(Self {
            _tmp: tmp,
            dir,
            free,
            trapped,
            trapped_key,
            trapped_pin,
        })
    }
}

/// Arms one key per trap id in `ids`, each on device `dev` with a distinct
/// random inode number that matches no file (top bit set).
pub fn arm_no_file_keys(
    engine: &Engine,
    dev: u32,
    ids: Range<u32>,
    rng: &mut Rng,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        let key = loop {
            let key = TrapKey {
                dev,
                ino: rng.next() | (1 << 63),
            };
            if seen.insert(key) {
                break key;
            }
        };
        engine.arm(key, audit(id)).map_err(|e| e.to_string())?;
    }
    Ok(())
}
