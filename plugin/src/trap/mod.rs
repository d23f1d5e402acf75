//! The trap engine: eBPF programs that check every file open against the
//! armed (device, inode) keys, and the ring buffer that reports hits.
//!
//! [`engine`] is the only module that calls libbpf-rs; [`fanotify`] is the
//! tier without BPF (fanotify permission events on each armed inode);
//! [`seam`] is the [`Engine`] the runtime uses, whichever backend runs.
//! [`wire`] and [`dev`] are the pure encodings shared with `ebpf/kive.h`.

pub mod coalesce;
pub mod dev;
pub mod engine;
pub mod fanotify;
pub mod ring_reader;
pub mod seam;
pub mod stats;
pub mod wire;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use engine::{BpfEngine, KernelStats};
pub use ring_reader::RingReader;
pub use seam::{EachRecord, Engine, RecordSink};
pub use wire::{
    Action, Args, ArgsRef, EventText, Hook, RawEvent, Tamper, TamperKind, Texts, TrapKey, TrapValue,
};

/// A set of hooks that can report file opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// BPF LSM `file_open`: sees every open, can block.
    Lsm,
    /// `fmod_ret/security_file_open`: sees every open, can block.
    Trampoline,
    /// `fentry/security_file_open`: sees every open, cannot block.
    Fentry,
    /// `tp_btf/sys_exit` + `sched_process_exec`: syscall opens and execs.
    Tracepoint,
    /// Classic `syscalls/sys_exit_open*` tracepoints + `sched_process_exec`.
    TracepointClassic,
    /// fanotify permission events on each armed inode: every open and
    /// exec of a trapped file, can block; no BPF.
    Fanotify,
}

impl Tier {
    /// The name used in config, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::Trampoline => "trampoline",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
            Self::TracepointClassic => "tracepoint-classic",
            Self::Fanotify => "fanotify",
        }
    }

    /// Whether a trap with `action: block` is enforced on this tier.
    pub fn can_block(self) -> bool {
        matches!(self, Self::Lsm | Self::Trampoline | Self::Fanotify)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tier to use: the best that loads, or a forced one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TierChoice {
    /// Try lsm, trampoline, fentry, tracepoint, tracepoint-classic in order
    /// (fanotify only when forced: see the README's tier table).
    #[default]
    Auto,
    /// BPF LSM only.
    Lsm,
    /// fmod_ret (blocking), else fentry.
    Trampoline,
    /// fentry only (observes, never blocks).
    Fentry,
    /// tp_btf tracepoints only.
    Tracepoint,
    /// Classic tracepoints only.
    TracepointClassic,
    /// fanotify permission events only.
    Fanotify,
}

impl TierChoice {
    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Lsm => "lsm",
            Self::Trampoline => "trampoline",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
            Self::TracepointClassic => "tracepoint-classic",
            Self::Fanotify => "fanotify",
        }
    }
}

impl FromStr for TierChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "lsm" => Self::Lsm,
            "trampoline" => Self::Trampoline,
            "fentry" => Self::Fentry,
            "tracepoint" => Self::Tracepoint,
            "tracepoint-classic" => Self::TracepointClassic,
            "fanotify" => Self::Fanotify,
            other => {
                return Err(format!(
                    "unknown tier {other:?}: expected auto, lsm, trampoline, fentry, tracepoint, tracepoint-classic or fanotify"
                ))
            }
        })
    }
}

/// How the engine is loaded.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tier to use.
    pub tier: TierChoice,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Capacity of the trap map (distinct files armed). The BPF map is
    /// not preallocated: its memory follows the keys armed, this is a cap.
    pub max_traps: u32,
    /// Wake the reader only once this many bytes wait (0 = every event).
    pub wakeup_bytes: u64,
    /// The in-kernel flood limit per (trap, process).
    pub flood_limit: FloodLimit,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            tier: TierChoice::Auto,
            ring_bytes: 4 * 1024 * 1024,
            max_traps: 262_144,
            wakeup_bytes: 64 * 1024,
            flood_limit: FloodLimit::default(),
        }
    }
}

/// The kernel's flood limit per (trap, process): a burst of `burst`
/// events passes, then `events` per `window` on average (a generic cell
/// rate algorithm, in the kernel before the ring buffer reservation); the
/// rest are counted (per process, carried in its next event, and in
/// [`KernelStats::limited`]). One process opening a trapped file in a loop
/// can then not push out another process's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimit {
    /// Events per window per (trap, process); 0 turns the limit off.
    pub events: u32,
    /// The window.
    pub window: std::time::Duration,
    /// Events that may come at once (at least 1).
    pub burst: u32,
}

impl Default for FloodLimit {
    /// 64 events per second in bursts of up to 16: far above what any
    /// legitimate reader of one decoy does, far below what fills a ring
    /// buffer.
    fn default() -> Self {
        Self {
            events: 64,
            window: std::time::Duration::from_secs(1),
            burst: 16,
        }
    }
}

impl FloodLimit {
    /// The kernel's parameters: (ns between events, tolerance in ns);
    /// (0, 0) when off.
    pub fn gcra(&self) -> (u64, u64) {
        if self.events == 0 {
            return (0, 0);
        }
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let interval = (window / u64::from(self.events)).max(1);
        let tolerance = interval.saturating_mul(u64::from(self.burst.max(1) - 1));
        (interval, tolerance)
    }
}

/// Trap engine errors.
#[derive(Debug, Error)]
pub enum TrapError {
    /// The embedded object could not be opened.
    #[error("opening the embedded bpf object")]
    Open {
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The object has no `.rodata` to configure.
    #[error("the bpf object has no writable rodata")]
    Rodata,
    /// A map could not be configured or duplicated.
    #[error("configuring the {what}")]
    Config {
        /// What was being configured.
        what: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The kernel refused the tier's programs.
    #[error("loading the {tier} tier: {source}{}", verifier_log(log))]
    Load {
        /// Tier tried.
        tier: Tier,
        /// libbpf's error.
        source: libbpf_rs::Error,
        /// libbpf and verifier output.
        log: String,
    },
    /// A program loaded but did not attach.
    #[error("attaching {program} ({tier} tier): {source}")]
    Attach {
        /// Tier tried.
        tier: Tier,
        /// Program name.
        program: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// BPF LSM programs would attach but never run: `bpf` is not an
    /// active LSM (or the list could not be read).
    #[error(
        "the lsm tier: {0} (the kernel needs bpf in its LSM list, e.g. boot with lsm=...,bpf)"
    )]
    LsmInactive(String),
    /// No tier loaded; one error per tier tried.
    #[error("no hook tier could be loaded:\n{}", join(.0))]
    NoTier(Vec<TrapError>),
    /// A trap map update failed.
    #[error("updating trap key {}:{}{}", dev::kernel_dev_display(key.dev), key.ino,
        if source.kind() == libbpf_rs::ErrorKind::TooBig { " (the trap map is full: raise maxTraps)" } else { "" })]
    Map {
        /// Key updated.
        key: TrapKey,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The reader thread could not start.
    #[error("starting the ring buffer reader")]
    Thread(#[source] std::io::Error),
    /// The reader thread exited during start.
    #[error("the ring buffer reader exited during start")]
    ReaderDied,
    /// The tier hands its events on its own reader thread only.
    #[error("the fanotify tier reads its events on its own thread")]
    NoCallerReader,
    /// The ring buffer has a reader already (the thread, or the caller's).
    #[error("the ring buffer already has a reader")]
    SecondReader,
    /// A fanotify call failed.
    #[error("fanotify tier: {what}")]
    Fanotify {
        /// What was being done.
        what: String,
        /// The system error.
        source: std::io::Error,
    },
    /// The kernel's BPF run-time statistics could not be switched on.
    #[error("enabling bpf run-time statistics")]
    Stats(#[source] std::io::Error),
    /// The fanotify tier marks inodes: it needs the pinned file, not a key.
    #[error("arming trap key {}:{} on the fanotify tier needs the pinned file", dev::kernel_dev_display(key.dev), key.ino)]
    NeedsFile {
        /// Key to arm.
        key: TrapKey,
    },
}

impl TrapError {
    /// Whether the trap map refused a new key because it is full
    /// (`maxTraps` keys armed).
    pub fn is_map_full(&self) -> bool {
        matches!(self, Self::Map { source, .. } if source.kind() == libbpf_rs::ErrorKind::TooBig)
    }
}

/// Whether a kernel LSM list (`/sys/kernel/security/lsm`, comma-separated)
/// has `bpf` in it: without it, BPF LSM programs load and attach but the
/// kernel never calls them.
pub fn lsm_list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|m| m.trim() == "bpf")
}

fn verifier_log(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- libbpf/verifier log ---\n{}", log.trim_end())
    }
}

fn join(errors: &[TrapError]) -> String {
    errors
        .iter()
        .map(|e| format!("- {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_in_the_active_lsm_list() {
        assert!(lsm_list_has_bpf("lockdown,capability,landlock,bpf"));
        assert!(lsm_list_has_bpf("bpf\n"));
        // Ubuntu's default: BPF LSM built in, not enabled
        assert!(!lsm_list_has_bpf(
            "lockdown,capability,landlock,yama,apparmor,ima,evm"
        ));
        assert!(!lsm_list_has_bpf("bpffs,notbpf"));
        assert!(!lsm_list_has_bpf(""));
    }

    #[test]
    fn tier_choice_parses_every_name() {
        for (s, c) in [
            ("auto", TierChoice::Auto),
            ("lsm", TierChoice::Lsm),
            ("trampoline", TierChoice::Trampoline),
            ("fentry", TierChoice::Fentry),
            ("tracepoint", TierChoice::Tracepoint),
            ("tracepoint-classic", TierChoice::TracepointClassic),
            ("fanotify", TierChoice::Fanotify),
        ] {
            assert_eq!(s.parse::<TierChoice>(), Ok(c));
            assert_eq!(c.as_str(), s);
        }
        let err = "kprobe"
            .parse::<TierChoice>()
            .expect_err("kprobe is not a tier");
        assert!(err.contains("kprobe"), "{err}");
    }

    #[test]
    fn the_flood_limit_in_kernel_terms() {
        let d = FloodLimit::default();
        assert_eq!(d.gcra(), (15_625_000, 15 * 15_625_000));
        let off = FloodLimit { events: 0, ..d };
        assert_eq!(off.gcra(), (0, 0));
        let one = FloodLimit {
            events: 10,
            window: std::time::Duration::from_millis(100),
            burst: 0,
        };
        assert_eq!(one.gcra(), (10_000_000, 0), "a burst of 0 is a burst of 1");
    }

    #[test]
    fn only_lsm_trampoline_and_fanotify_block() {
        assert!(Tier::Lsm.can_block());
        assert!(Tier::Trampoline.can_block());
        assert!(Tier::Fanotify.can_block());
        assert!(!Tier::Fentry.can_block());
        assert!(!Tier::Tracepoint.can_block());
        assert!(!Tier::TracepointClassic.can_block());
    }
}
