//! The engine the runtime uses: one of the eBPF tiers ([`BpfEngine`]) or the
//! fanotify tier ([`FanotifyEngine`]), picked by [`Engine::load`]. Both arm
//! keys, count hits and hand each access to the reader callback as the same
//! `struct kive_event` bytes, so nothing above this seam knows which runs.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::engine::{bpf_lsm_active, BpfEngine, KernelStats};
use super::fanotify::FanotifyEngine;
use super::ring_reader::RingReader;
use super::wire::{TrapKey, TrapValue};
use super::{EngineConfig, Tier, TierChoice, TrapError};

/// Where the reader thread hands the records it reads.
pub trait RecordSink: Send + 'static {
    /// One `struct kive_event`; must be quick (decode and queue).
    fn record(&mut self, data: &[u8]);
    /// The read that handed the last records is over (hand them on).
    fn flush(&mut self) {}
}

/// A sink that handles each record on its own: a closure.
pub struct EachRecord<F>(pub F);

impl<F: FnMut(&[u8]) + Send + 'static> RecordSink for EachRecord<F> {
    fn record(&mut self, data: &[u8]) {
        (self.0)(data)
    }
}

/// A loaded trap engine. Dropping it detaches everything it attached.
#[allow(clippy::large_enum_variant)] // one engine per process, never moved in a loop
pub enum Engine {
    /// An eBPF tier.
    Bpf(BpfEngine),
    /// fanotify permission events.
    Fanotify(FanotifyEngine),
}

/// The tiers to try for a choice, best first.
///
/// `auto` keeps the eBPF order and does not try fanotify: see the README's
/// tier table for why (a kive that stops answering stalls every open of a
/// trapped file; the runtime must hand it each pinned file).
pub fn candidates(choice: TierChoice) -> Vec<Tier> {
    match choice {
        TierChoice::Auto => vec![
            Tier::Lsm,
            Tier::Trampoline,
            Tier::Fentry,
            Tier::Tracepoint,
            Tier::TracepointClassic,
        ],
        TierChoice::Lsm => vec![Tier::Lsm],
        // fentry observes when fmod_ret (blocking) is refused
        TierChoice::Trampoline => vec![Tier::Trampoline, Tier::Fentry],
        TierChoice::Fentry => vec![Tier::Fentry],
        TierChoice::Tracepoint => vec![Tier::Tracepoint],
        TierChoice::TracepointClassic => vec![Tier::TracepointClassic],
        TierChoice::Fanotify => vec![Tier::Fanotify],
    }
}

impl Engine {
    /// Loads and attaches the best tier allowed by `cfg.tier`.
    pub fn load(cfg: &EngineConfig) -> Result<Self, TrapError> {
        let mut failures: Vec<TrapError> = Vec::new();
        for tier in candidates(cfg.tier) {
            let loaded = match tier {
                Tier::Fanotify => FanotifyEngine::load().map(Self::Fanotify),
                Tier::Lsm => bpf_lsm_active()
                    .and_then(|()| BpfEngine::load_tier(tier, cfg))
                    .map(Self::Bpf),
                _ => BpfEngine::load_tier(tier, cfg).map(Self::Bpf),
            };
            match loaded {
                Ok(engine) => {
                    for f in &failures {
                        let full = f.to_string();
                        tracing::info!(
                            "tier not available: {}",
                            full.lines().next().unwrap_or_default()
                        );
                        tracing::debug!("{full}");
                    }
                    return Ok(engine);
                }
                Err(e) => failures.push(e),
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0));
        }
        Err(TrapError::NoTier(failures))
    }

    /// The tier in use.
    pub fn tier(&self) -> Tier {
        match self {
            Self::Bpf(e) => e.tier(),
            Self::Fanotify(_) => Tier::Fanotify,
        }
    }

    /// The capacity of the BPF trap map (`None` on the fanotify tier, which
    /// keeps its marks in a table of its own).
    pub fn trap_capacity(&self) -> Option<u32> {
        match self {
            Self::Bpf(e) => Some(e.trap_capacity()),
            Self::Fanotify(_) => None,
        }
    }

    /// The attached programs (none on the fanotify tier).
    pub fn programs(&self) -> &[&'static str] {
        match self {
            Self::Bpf(e) => e.programs(),
            Self::Fanotify(_) => &[],
        }
    }

    /// Arms a key. The fanotify tier marks inodes and refuses this
    /// ([`TrapError::NeedsFile`]): use [`Engine::arm_file`].
    pub fn arm(&self, key: TrapKey, value: TrapValue) -> Result<(), TrapError> {
        match self {
            Self::Bpf(e) => e.arm(key, value),
            Self::Fanotify(_) => Err(TrapError::NeedsFile { key }),
        }
    }

    /// Arms the key of a pinned file (any fd of it, `O_PATH` included);
    /// `key` must be that file's key.
    pub fn arm_file(
        &self,
        file: BorrowedFd<'_>,
        key: TrapKey,
        value: TrapValue,
    ) -> Result<(), TrapError> {
        match self {
            Self::Bpf(e) => e.arm(key, value),
            Self::Fanotify(e) => e.arm(file, key, value),
        }
    }

    /// Removes a key; a key that is not armed is not an error.
    pub fn disarm(&self, key: TrapKey) -> Result<(), TrapError> {
        match self {
            Self::Bpf(e) => e.disarm(key),
            Self::Fanotify(e) => e.disarm(key),
        }
    }

    /// Lists (or unlists) executable `exe` as a source of trap `trap_id`
    /// (rules with `fromSource`): a BPF map on the kernel tiers, a set the
    /// fanotify tier's reader looks the opener's executable up in.
    pub fn set_source(&self, trap_id: u32, exe: TrapKey, listed: bool) -> Result<(), TrapError> {
        match self {
            Self::Bpf(e) => e.set_source(trap_id, exe, listed),
            Self::Fanotify(e) => {
                e.set_source(trap_id, exe, listed);
                Ok(())
            }
        }
    }

    /// The armed keys.
    pub fn armed_keys(&self) -> Vec<TrapKey> {
        match self {
            Self::Bpf(e) => e.armed_keys(),
            Self::Fanotify(e) => e.armed_keys(),
        }
    }

    /// The kernel's run count and run time of each attached BPF program
    /// (none on the fanotify tier, which runs none).
    pub fn program_stats(&self) -> Vec<super::stats::ProgramStats> {
        match self {
            Self::Bpf(e) => e.program_stats(),
            Self::Fanotify(_) => Vec::new(),
        }
    }

    /// Hit, drop and block counters.
    pub fn kernel_stats(&self) -> KernelStats {
        match self {
            Self::Bpf(e) => e.kernel_stats(),
            Self::Fanotify(e) => e.stats(),
        }
    }

    /// Starts the reader thread: every access is handed to `on_record` as
    /// `struct kive_event` bytes; it must be quick (decode and queue).
    pub fn start_reader<F>(&mut self, poll: Duration, on_record: F) -> Result<(), TrapError>
    where
        F: FnMut(&[u8]) + Send + 'static,
    {
        self.start_reader_sink(poll, EachRecord(on_record))
    }

    /// [`Engine::start_reader`] with a sink told when a read ends
    /// ([`RecordSink::flush`]): after each drain of the ring buffer, and
    /// on the fanotify tier after each access (its opener waits).
    pub fn start_reader_sink<S: RecordSink>(
        &mut self,
        poll: Duration,
        mut sink: S,
    ) -> Result<(), TrapError> {
        match self {
            Self::Bpf(e) => e.start_reader_sink(poll, sink),
            Self::Fanotify(e) => e.start_reader(poll, move |data: &[u8]| {
                sink.record(data);
                sink.flush();
            }),
        }
    }

    /// Whether the caller may read the events itself ([`Engine::ring_reader`]):
    /// the eBPF tiers' ring buffer, yes; the fanotify tier's permission
    /// events are answered on its reader thread at once (the opener waits).
    pub fn reads_in_caller(&self) -> bool {
        matches!(self, Self::Bpf(_))
    }

    /// A reader of the ring buffer into `sink` that the caller runs
    /// instead of the reader thread (the eBPF tiers only:
    /// [`Engine::reads_in_caller`]).
    pub fn ring_reader<S: RecordSink>(&mut self, sink: S) -> Result<RingReader<S>, TrapError> {
        match self {
            Self::Bpf(e) => e.ring_reader(sink),
            Self::Fanotify(_) => Err(TrapError::NoCallerReader),
        }
    }

    /// Stops the reader thread.
    pub fn stop_reader(&mut self) {
        match self {
            Self::Bpf(e) => e.stop_reader(),
            Self::Fanotify(e) => e.stop_reader(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_waits_on_userspace_and_forcing_tries_one_family() {
        assert!(!candidates(TierChoice::Auto).contains(&Tier::Fanotify));
        assert_eq!(candidates(TierChoice::Fanotify), [Tier::Fanotify]);
        assert_eq!(
            candidates(TierChoice::Trampoline),
            [Tier::Trampoline, Tier::Fentry]
        );
    }
}
