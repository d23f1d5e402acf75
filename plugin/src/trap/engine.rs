//! The only module that touches libbpf-rs: opens the skeleton, picks and
//! loads a hook tier, attaches it, updates the trap map and reads the ring
//! buffer. Everything outside sees plain Rust types.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, OpenObject, PrintLevel};

use super::ring_reader::RingReader;
use super::wire::{TrapKey, TrapValue};
use super::{EngineConfig, Tier, TrapError};
use crate::skel::{KiveSkel, KiveSkelBuilder, OpenKiveSkel};

/// Counters summed over every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Accesses to armed keys (reported or not).
    pub hits: u64,
    /// Events lost because the ring buffer was full.
    pub drops: u64,
    /// Opens denied.
    pub blocked: u64,
    /// Events held back by the per-(trap, process) flood limit.
    pub limited: u64,
}

/// A loaded and attached eBPF trap engine (one of the BPF tiers). Dropping
/// it detaches every program and closes every map.
pub struct BpfEngine {
    tier: Tier,
    programs: Vec<&'static str>,
    /// The kernel's id of each attached program (for its run statistics).
    program_ids: Vec<(u32, &'static str)>,
    links: Vec<Link>,
    traps: MapHandle,
    stats: MapHandle,
    events: MapHandle,
    sources: MapHandle,
    reader: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// A [`RingReader`] was handed out: the caller reads the ring (two
    /// readers would race on its consumer position).
    caller_reads: bool,
}

/// libbpf's log of the load in progress, kept for the error.
static LOAD_LOG: Mutex<String> = Mutex::new(String::new());

fn capture_log(level: PrintLevel, msg: String) {
    if level == PrintLevel::Debug {
        return;
    }
    tracing::debug!(target: "kive::libbpf", "{}", msg.trim_end());
    if let Ok(mut log) = LOAD_LOG.lock() {
        if log.len() < 256 * 1024 {
            log.push_str(&msg);
        }
    }
}

fn take_log() -> String {
    LOAD_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// The programs each tier autoloads, in attach order.
fn tier_programs(tier: Tier) -> &'static [&'static str] {
    match tier {
        Tier::Lsm => &[
            "kive_lsm_file_open",
            "kive_lsm_inode_rename",
            "kive_lsm_inode_link",
            "kive_lsm_inode_unlink",
        ],
        Tier::Trampoline => &[
            "kive_fmod_ret_file_open",
            "kive_fentry_inode_rename",
            "kive_fentry_inode_link",
            "kive_fentry_inode_unlink",
        ],
        Tier::Fentry => &[
            "kive_fentry_file_open",
            "kive_fentry_inode_rename",
            "kive_fentry_inode_link",
            "kive_fentry_inode_unlink",
        ],
        Tier::Tracepoint => &["kive_tp_sys_exit", "kive_tp_exec"],
        Tier::TracepointClassic => &[
            "kive_tpc_openat",
            "kive_tpc_openat2",
            "kive_tpc_open",
            "kive_tpc_creat",
            "kive_tpc_open_by_handle_at",
            "kive_tpc_exec",
        ],
        Tier::Fanotify => &[],
    }
}

/// Where the kernel lists its active LSMs (securityfs).
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Checks that BPF LSM programs would run, before trying the lsm tier:
/// a kernel built with BPF LSM but booted without `bpf` in its LSM list
/// accepts and attaches them, then never calls them.
pub(super) fn bpf_lsm_active() -> Result<(), TrapError> {
    match std::fs::read_to_string(LSM_LIST) {
        Ok(list) if super::lsm_list_has_bpf(&list) => Ok(()),
        Ok(list) => Err(TrapError::LsmInactive(format!(
            "bpf is not an active LSM ({LSM_LIST}: {})",
            list.trim()
        ))),
        Err(e) => Err(TrapError::LsmInactive(format!(
            "cannot read {LSM_LIST} (is securityfs mounted?): {e}"
        ))),
    }
}

/// The loader's pid as its own pid namespace numbers it, and that
/// namespace's (kernel-encoded device, inode): the kernel compares the
/// current task's pid in that namespace, right wherever the loader runs
/// (Falco in a container has its own pid namespace). `None` when
/// `/proc/self/ns/pid` cannot be read: the kernel then compares host pids.
fn self_identity() -> (u32, Option<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let pid = std::process::id();
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) => (
            pid,
            Some((u64::from(super::dev::kernel_dev(m.dev())), m.ino())),
        ),
        Err(e) => {
            tracing::warn!(
                "cannot read /proc/self/ns/pid ({e}): the loader is recognized by its host pid"
            );
            (pid, None)
        }
    }
}

impl BpfEngine {
    /// Loads and attaches one BPF tier.
    pub(super) fn load_tier(tier: Tier, cfg: &EngineConfig) -> Result<Self, TrapError> {
        libbpf_rs::set_print(Some((PrintLevel::Info, capture_log)));
        take_log();
        let mut storage = MaybeUninit::<OpenObject>::uninit();
        let mut open: OpenKiveSkel<'_> = KiveSkelBuilder::default()
            .open(&mut storage)
            .map_err(|source| TrapError::Open { source })?;
        let wanted = tier_programs(tier);
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            prog.set_autoload(wanted.contains(&name.as_str()));
        }
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or(TrapError::Rodata)?;
        let (pid, ns) = self_identity();
        rodata.self_tgid = pid;
        if let Some((dev, ino)) = ns {
            rodata.self_ns_dev = dev;
            rodata.self_ns_ino = ino;
        }
        // a threshold past a quarter of the ring would let it fill
        // between polls: the reader is woken by then
        rodata.wakeup_bytes = cfg.wakeup_bytes.min(u64::from(cfg.ring_bytes / 4));
        (rodata.limit_interval_ns, rodata.limit_tolerance_ns) = cfg.flood_limit.gcra();
        open.maps
            .events
            .set_max_entries(cfg.ring_bytes)
            .map_err(|source| TrapError::Config {
                what: "ring buffer size",
                source,
            })?;
        open.maps
            .traps
            .set_max_entries(cfg.max_traps)
            .map_err(|source| TrapError::Config {
                what: "trap map size",
                source,
            })?;
        let skel: KiveSkel<'_> = open.load().map_err(|source| TrapError::Load {
            tier,
            source,
            log: take_log(),
        })?;
        let mut links = Vec::new();
        let mut program_ids = Vec::new();
        for prog in skel.object().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            let Some(wanted_name) = wanted.iter().find(|w| **w == name) else {
                continue;
            };
            let link = prog.attach().map_err(|source| TrapError::Attach {
                tier,
                program: name.clone(),
                source,
            })?;
            // the id only feeds statistics: a link without one is still attached
            if let Ok(info) = link.info() {
                program_ids.push((info.prog_id, *wanted_name));
            }
            links.push(link);
        }
        let handle = |m: &libbpf_rs::Map<'_>, what: &'static str| {
            MapHandle::try_from(m).map_err(|source| TrapError::Config { what, source })
        };
        let traps = handle(&skel.maps.traps, "trap map handle")?;
        let stats = handle(&skel.maps.stats, "stats map handle")?;
        let events = handle(&skel.maps.events, "ring buffer handle")?;
        let sources = handle(&skel.maps.sources, "sources map handle")?;
        // The links and map handles keep programs and maps alive; the
        // object itself (and its fds) is closed here.
        drop(skel);
        Ok(Self {
            tier,
            programs: wanted.to_vec(),
            program_ids,
            links,
            traps,
            stats,
            events,
            sources,
            reader: None,
            caller_reads: false,
        })
    }

    /// The tier in use.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The attached programs.
    pub fn programs(&self) -> &[&'static str] {
        &self.programs
    }

    /// Puts a key into the trap map (or replaces its value).
    pub fn arm(&self, key: TrapKey, value: TrapValue) -> Result<(), TrapError> {
        self.traps
            .update(&key.to_bytes(), &value.to_bytes(), MapFlags::ANY)
            .map_err(|source| TrapError::Map { key, source })
    }

    /// The trap map's capacity (`maxTraps`: its memory follows the keys
    /// armed, not preallocated).
    pub fn trap_capacity(&self) -> u32 {
        self.traps.max_entries()
    }

    /// Removes a key; a key that is not armed is not an error.
    pub fn disarm(&self, key: TrapKey) -> Result<(), TrapError> {
        match self.traps.delete(&key.to_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TrapError::Map { key, source }),
        }
    }

    /// Lists (or unlists) executable `exe` as a source of trap `trap_id`
    /// (rules with `fromSource`).
    pub fn set_source(&self, trap_id: u32, exe: TrapKey, listed: bool) -> Result<(), TrapError> {
        let k = super::wire::source_key_bytes(trap_id, exe);
        let r = if listed {
            self.sources.update(&k, &[1u8], MapFlags::ANY)
        } else {
            match self.sources.delete(&k) {
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        r.map_err(|source| TrapError::Map { key: exe, source })
    }

    /// The keys in the trap map.
    pub fn armed_keys(&self) -> Vec<TrapKey> {
        self.traps
            .keys()
            .filter_map(|k| {
                let k: [u8; 16] = k.try_into().ok()?;
                Some(TrapKey {
                    dev: u32::from_le_bytes(k[0..4].try_into().ok()?),
                    ino: u64::from_le_bytes(k[8..16].try_into().ok()?),
                })
            })
            .collect()
    }

    /// The kernel's run count and run time of each attached program
    /// (counted only while run-time statistics are on: [`super::stats`]).
    pub fn program_stats(&self) -> Vec<super::stats::ProgramStats> {
        super::stats::read(&self.program_ids)
    }

    /// Per-CPU counters, summed.
    pub fn kernel_stats(&self) -> KernelStats {
        let read = |idx: u32| -> u64 {
            match self.stats.lookup_percpu(&idx.to_le_bytes(), MapFlags::ANY) {
                Ok(Some(per_cpu)) => per_cpu
                    .iter()
                    .filter_map(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?)))
                    .sum(),
                _ => 0,
            }
        };
        KernelStats {
            hits: read(0),
            drops: read(1),
            blocked: read(2),
            limited: read(3),
        }
    }

    /// Starts the reader thread: every ring-buffer record is handed to
    /// `on_record`, which must be quick (decode and queue, nothing more).
    pub fn start_reader<F>(&mut self, poll: Duration, on_record: F) -> Result<(), TrapError>
    where
        F: FnMut(&[u8]) + Send + 'static,
    {
        self.start_reader_sink(poll, super::seam::EachRecord(on_record))
    }

    /// [`BpfEngine::start_reader`] with a sink flushed after each drain.
    pub fn start_reader_sink<S: super::seam::RecordSink>(
        &mut self,
        poll: Duration,
        sink: S,
    ) -> Result<(), TrapError> {
        if self.reader.is_some() {
            return Ok(());
        }
        if self.caller_reads {
            return Err(TrapError::SecondReader);
        }
        let events = MapHandle::try_from(&self.events).map_err(|source| TrapError::Config {
            what: "ring buffer handle",
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("kive-ring".into())
            .spawn(move || {
                let mut reader = match RingReader::new(events, sink) {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !stop2.load(Ordering::Relaxed) {
                    reader.read(poll);
                }
                reader.drain();
            })
            .map_err(TrapError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(TrapError::ReaderDied);
            }
        }
        self.reader = Some((stop, handle));
        Ok(())
    }

    /// A reader of the ring buffer into `sink` for the caller to run
    /// ([`RingReader::read`]) instead of the reader thread.
    pub fn ring_reader<S: super::seam::RecordSink>(
        &mut self,
        sink: S,
    ) -> Result<RingReader<S>, TrapError> {
        if self.reader.is_some() || self.caller_reads {
            return Err(TrapError::SecondReader);
        }
        let events = MapHandle::try_from(&self.events).map_err(|source| TrapError::Config {
            what: "ring buffer handle",
            source,
        })?;
        let reader = RingReader::new(events, sink)?;
        self.caller_reads = true;
        Ok(reader)
    }

    /// Stops the reader thread (waits at most one poll period, a flood's
    /// pause and one read).
    pub fn stop_reader(&mut self) {
        if let Some((stop, handle)) = self.reader.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

impl Drop for BpfEngine {
    fn drop(&mut self) {
        self.stop_reader();
        // links detach on drop, map handles close on drop
        self.links.clear();
    }
}
