//! The running tripwire: loads the engine, arms the planned traps, re-arms
//! them when their files are replaced, and turns kernel events into alerts.
//!
//! Threads: the engine's ring reader only decodes and queues (bounded),
//! or the consumer reads the ring itself with a spare thread for when it
//! is away ([`reading`]); a rescan thread re-resolves armed paths; the
//! consumer (`kive run` or Falco's `next_batch`) pulls events and enriches
//! them.

pub mod accessor;
mod alert_view;
mod alerts;
mod arm;
mod by_id;
mod config;
pub mod enrich;
mod exits;
pub mod follow;
pub mod loss;
mod pod_diff;
mod pod_roots;
pub mod pods;
mod queue;
pub mod ratelimit;
mod reading;
mod rescan;
mod ring_sink;
mod sets;
mod spare_pace;
mod stalls;
pub mod table;
pub mod tamper;
mod unsynced;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::alert::text::escape;
use crate::callback::Callbacks;
use crate::node::host::{boot_id, BootClock};
use crate::node::Root;
use crate::policy::{CompiledTrap, TrapAction};
use crate::sync::lock;
use crate::trap::{Engine, RawEvent, Tier, TrapError, TrapKey};

pub use accessor::Accessors;
pub use alert_view::{AlertView, ProcessStrings};
pub use config::{ArmReport, Metrics, RuntimeConfig};
pub use enrich::{accessor_metadata, build_alert, CgroupFacts, NodeContext};
pub use loss::LossTracker;
pub use pods::{DesiredEntry, PodController, PodDesired, PodReconcileReport};
pub use ratelimit::{RateLimiter, Verdict};
use reading::Reading;
pub use table::{ContainerOwner, Entry, EntryState, Followed, Owner, TrapTable};

#[derive(Default)]
struct Counters {
    suppressed: AtomicU64,
    queue_drops: AtomicU64,
    decode_errors: AtomicU64,
    stale: AtomicU64,
    rearms: AtomicU64,
    map_full: AtomicU64,
    rescan_unchanged: AtomicU64,
    rescan_resolved: AtomicU64,
    rescan_roots: AtomicU64,
    rescan_notified: AtomicU64,
    rescan_full_passes: AtomicU64,
    /// Ring records read by the consumer itself ([`reading`]).
    caller_reads: AtomicU64,
    /// Ring records the spare thread moved into the queue ([`reading`]).
    spare_reads: AtomicU64,
}

pub(crate) struct Shared {
    engine: Engine,
    table: Mutex<TrapTable>,
    counters: Arc<Counters>,
    /// Tamper events seen by the rescan, into the consumer's queue.
    tamper_tx: queue::Sender<RawEvent>,
    /// The node's root: overlay layers are resolved in it.
    host_root: Option<Arc<Root>>,
    /// The node's init (`<procRoot>/1`): its mount table tells a pod's own
    /// filesystems from the node's ([`crate::node::host::node_init`]).
    node_mounts: Option<crate::node::pod_own::NodeMounts>,
    /// Tiers with kernel tamper hooks: what the kernel reported, so the
    /// rescan does not report it again ([`tamper`]).
    kernel_tampers: Option<Arc<Mutex<tamper::KernelTampers>>>,
    /// Entries whose file work hangs, and the workers that run it.
    stalls: stalls::Stalls,
    /// What the rescans remember between passes ([`rescan`]).
    rescan: rescan::RescanState,
    /// Keys whose last kernel write failed ([`unsynced`]).
    unsynced: unsynced::Unsynced,
    /// The consumer's ring reader when it reads the ring itself: the
    /// rescan catches up with the kernel's tamper events first.
    caller_reader: Option<reading::Reader>,
}

impl Shared {
    pub(crate) fn table(&self) -> MutexGuard<'_, TrapTable> {
        lock(&self.table)
    }

    /// Writes the kernel value of a key from the table (or removes it);
    /// a failure is logged and returned.
    pub(crate) fn sync_key(&self, table: &TrapTable, key: TrapKey) -> Result<(), TrapError> {
        let result = match (table.kernel_value(key), table.pin_of(key)) {
            (Some(v), Some(file)) => self.engine.arm_file(file, key, v),
            (Some(v), None) => self.engine.arm(key, v),
            (None, _) => self.engine.disarm(key),
        };
        if let Err(e) = &result {
            tracing::error!("{}", escape(&format!("{e:#}")));
        }
        self.unsynced.wrote(key, &result);
        result
    }

    /// Runs `work` for each entry on a worker with a deadline
    /// ([`stalls`]): the result of each, `None` for an entry stalled (now
    /// or already) or not run because kive is closing.
    pub(crate) fn isolated(
        self: &Arc<Self>,
        ids: &[u32],
        work: impl Fn(&Shared, u32) -> Result<bool, String> + Send + Sync + 'static,
    ) -> Vec<(u32, Option<Result<bool, String>>)> {
        // a stuck worker holds the runtime only while it runs an entry
        let me = Arc::downgrade(self);
        let work: stalls::Work = Arc::new(move |id| match me.upgrade() {
            Some(shared) => work(&shared, id),
            None => Ok(false),
        });
        // a container that exited meanwhile: back to pending (looked at
        // after the batch, once per root; a late result on its worker)
        let me = Arc::downgrade(self);
        let late: stalls::Late = Arc::new(move |id, result| match me.upgrade() {
            Some(shared) => shared.unless_exited(id, result),
            None => result,
        });
        let name = |id: u32| {
            self.table()
                .get(id)
                .map(|e| format!("{} ({})", e.trap.origin, e.trap.path))
                .unwrap_or_else(|| format!("entry {id}"))
        };
        let results = self.stalls.run_each(ids, &work, &late, &name);
        self.unless_exited_all(results)
    }

    /// Whether the runtime is closing (no more file work is started).
    pub(crate) fn closing(&self) -> bool {
        self.stalls.closing()
    }
}

/// Whether the tier's kernel side reports renames, links and unlinks of
/// trapped inodes itself (`lsm/inode_*`, `fentry/security_inode_*`).
fn kernel_sees_tamper(tier: Tier) -> bool {
    matches!(tier, Tier::Lsm | Tier::Trampoline | Tier::Fentry)
}

/// The host root with the mountinfo its mounts are read from: kive's own
/// when it is kive's `/` (the node's mounts seen as kive sees them), else
/// (the node's `/` mounted elsewhere, `/host`) the node's init's, pid 1 of
/// the proc filesystem at `proc_root`.
fn host_mounts(root: Root, host_root: &std::path::Path, proc_root: &std::path::Path) -> Root {
    if host_root == std::path::Path::new("/") {
        root.with_own_mounts(proc_root)
    } else {
        root.with_init_mounts(proc_root)
    }
}

/// A running tripwire.
pub struct Runtime {
    /// First: the spare thread stops before the engine may go.
    reading: Reading,
    shared: Arc<Shared>,
    events: queue::Receiver<RawEvent>,
    node: NodeContext,
    proc_root: PathBuf,
    host_root: PathBuf,
    stop: Arc<AtomicBool>,
    rescanner: Option<JoinHandle<()>>,
    callbacks: Option<Callbacks>,
    accessors: Accessors,
    limiter: Mutex<RateLimiter>,
    loss: Mutex<LossTracker>,
}

impl Runtime {
    /// Loads the engine and arms every trap that targets this node.
    pub fn start(
        cfg: &RuntimeConfig,
        traps: &[Arc<CompiledTrap>],
    ) -> Result<(Self, ArmReport), TrapError> {
        Self::start_until(cfg, traps, Arc::default())
    }

    /// [`Self::start`] that stops arming as soon as `stop` is set (e.g. by
    /// a SIGTERM handler): it returns what was armed by then, the rest
    /// counted in [`ArmReport::not_armed`]. The runtime sets `stop` when
    /// it is dropped.
    pub fn start_until(
        cfg: &RuntimeConfig,
        traps: &[Arc<CompiledTrap>],
        stop: Arc<AtomicBool>,
    ) -> Result<(Self, ArmReport), TrapError> {
        if let Err(e) = crate::node::fds::raise_nofile() {
            tracing::warn!("raising the open-file limit: {e}");
        }
        let mut engine = Engine::load(&cfg.engine)?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = queue::bounded::<RawEvent>(cfg.queue_capacity);
        let tamper_tx = tx.clone();
        let kernel_tampers = kernel_sees_tamper(engine.tier())
            .then(|| Arc::new(Mutex::new(tamper::KernelTampers::default())));
        let sink = ring_sink::RingSink {
            tx,
            counters: Arc::clone(&counters),
            seen: kernel_tampers.clone(),
            gathered: Vec::with_capacity(ring_sink::GATHER),
        };
        let reading = if cfg.read_in_caller && engine.reads_in_caller() {
            Reading::caller(engine.ring_reader(sink)?, Arc::clone(&counters))?
        } else {
            engine.start_reader_sink(cfg.poll, sink)?;
            Reading::Thread
        };
        let tier = engine.tier();
        let mut report = ArmReport::default();
        let host_root = match Root::open(&cfg.host_root) {
            Ok(r) => Some(Arc::new(host_mounts(r, &cfg.host_root, &cfg.proc_root))),
            Err(e) => {
                report.failures.push(format!("host root: {e}"));
                None
            }
        };
        let shared = Arc::new(Shared {
            engine,
            table: Mutex::new(TrapTable::default()),
            counters,
            tamper_tx,
            host_root: host_root.clone(),
            node_mounts: crate::node::host::node_init(&cfg.proc_root)
                .map(crate::node::pod_own::NodeMounts::new),
            kernel_tampers,
            stalls: stalls::Stalls::new(cfg.resolve_deadline, Arc::clone(&stop)),
            rescan: rescan::RescanState::new(cfg),
            unsynced: unsynced::Unsynced::default(),
            caller_reader: reading.reader(),
        });
        let mut ids = Vec::new();
        for trap in traps {
            report.warnings.extend(trap.warnings.iter().cloned());
            if !trap.target.pods.is_empty() {
                report.needs_cluster.push(trap.origin.clone());
            }
            if !trap.target.host {
                continue;
            }
            if !trap.target.node_labels.is_empty() {
                report.warnings.push(format!(
                    "{}: field spec.nodeSelector: a policy file applies on the node that loads it (node labels are matched for policies read from the API server)",
                    trap.origin
                ));
            }
            if trap.action == TrapAction::Block && !tier.can_block() {
                report.warnings.push(format!(
                    "{}: action block is not enforced on the {tier} tier: accesses are reported only",
                    trap.origin
                ));
            }
            let Some(root) = &host_root else { continue };
            ids.push(
                shared
                    .table()
                    .insert(Arc::clone(trap), Owner::Host, Some(Arc::clone(root))),
            );
        }
        for (id, result) in shared.isolated(&ids, Shared::arm_entry) {
            match result {
                Some(Ok(_)) => report.armed += 1,
                Some(Err(msg)) => {
                    shared.first_report(id);
                    report.failures.push(msg);
                }
                None if shared.closing() => report.not_armed += 1,
                // stalled (logged): its worker arms it when it returns
                None => report.failures.push(format!(
                    "{}: resolving did not return in {:?}, retried when it does",
                    shared
                        .table()
                        .get(id)
                        .map(|e| e.trap.origin.to_string())
                        .unwrap_or_default(),
                    cfg.resolve_deadline
                )),
            }
        }
        let rescanner = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let every = cfg.rescan;
            std::thread::Builder::new()
                .name("kive-rescan".into())
                .spawn(move || {
                    let tick = Duration::from_millis(20).min(every);
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        waited += tick;
                        if waited >= every {
                            waited = Duration::ZERO;
                            shared.rescan();
                        }
                    }
                })
                .map_err(TrapError::Thread)?
        };
        let callbacks = match &cfg.callbacks {
            Some(c) => match Callbacks::start(c.clone()) {
                Ok(cb) => Some(cb),
                Err(e) => {
                    report.failures.push(format!("callbacks disabled: {e}"));
                    None
                }
            },
            None => None,
        };
        let node = NodeContext {
            kernel_id: boot_id(),
            node_name: cfg.node_name.clone(),
            clock: BootClock::now(),
        };
        Ok((
            Self {
                shared,
                events: rx,
                reading,
                node,
                proc_root: cfg.proc_root.clone(),
                host_root: cfg.host_root.clone(),
                stop,
                rescanner: Some(rescanner),
                callbacks,
                accessors: Accessors::for_this_node(cfg.proc_root.clone()),
                limiter: Mutex::new(RateLimiter::default()),
                loss: Mutex::new(LossTracker::new(cfg.loss_report)),
            },
            report,
        ))
    }

    /// The active tier.
    pub fn tier(&self) -> Tier {
        self.shared.engine.tier()
    }

    /// The next kernel event, waiting at most `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<RawEvent> {
        self.reading.next(&self.events, timeout)
    }

    /// The next kernel event if one is queued.
    pub fn try_next_event(&self) -> Option<RawEvent> {
        self.events.try_recv()
    }

    /// One rescan pass now (the rescan thread does it periodically): the
    /// entries a change notification named, those not watched, and every
    /// entry when the safety net is due; those whose file changed
    /// re-resolved ([`rescan`]).
    pub fn rescan_now(&self) {
        self.shared.rescan();
    }

    /// One rescan pass now that looks at every armed entry, named by a
    /// change notification or not (the safety net's pass).
    pub fn rescan_full_now(&self) {
        self.shared.rescan_full();
    }

    /// Keys in the kernel map (for checks).
    pub fn kernel_keys(&self) -> Vec<TrapKey> {
        self.shared.engine.armed_keys()
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        let ((armed, pending), keys) = {
            let table = self.shared.table();
            (table.counts(), table.key_count())
        };
        let c = &self.shared.counters;
        let notify = self.shared.rescan.notify_figures();
        let (rate_limit_windows, rate_limit_evicted) = {
            let mut rl = lock(&self.limiter);
            // idle windows go even when no rate-limited alert comes any more
            rl.sweep(crate::node::host::system_clocks().0);
            (rl.len(), rl.evicted())
        };
        Metrics {
            armed,
            pending,
            kernel: self.shared.engine.kernel_stats(),
            queue_drops: c.queue_drops.load(Ordering::Relaxed),
            queued: self.events.held(),
            caller_read_records: c.caller_reads.load(Ordering::Relaxed),
            spare_read_records: c.spare_reads.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            stale_events: c.stale.load(Ordering::Relaxed),
            rearms: c.rearms.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
            rate_limit_windows,
            rate_limit_evicted,
            cgroup_index: self.accessors.indexed(),
            fd_limit: crate::node::fds::fd_limit(),
            open_fds: crate::node::fds::open_fds(),
            rss_bytes: crate::node::limits::rss_bytes(),
            stalled: self.shared.stalls.count(),
            stalls: self.shared.stalls.total(),
            trap_map_capacity: self.shared.engine.trap_capacity().map_or(0, u64::from),
            trap_map_keys: keys,
            trap_map_full: c.map_full.load(Ordering::Relaxed),
            rescan_unchanged: c.rescan_unchanged.load(Ordering::Relaxed),
            rescan_resolved: c.rescan_resolved.load(Ordering::Relaxed),
            rescan_roots_found: c.rescan_roots.load(Ordering::Relaxed),
            rescan_notified: c.rescan_notified.load(Ordering::Relaxed),
            rescan_full_passes: c.rescan_full_passes.load(Ordering::Relaxed),
            notify_marks: notify.marks,
            notify_mount_watches: notify.mount_watches,
            notify_events: notify.events,
            notify_overflows: notify.overflows,
            notify_watched: notify.watched,
            notify_unwatched: notify.unwatched,
            notify_mark_time_us: notify.watch_us,
            callbacks: self
                .callbacks
                .as_ref()
                .map(Callbacks::totals)
                .unwrap_or_default(),
            callback_endpoints: self
                .callbacks
                .as_ref()
                .map(Callbacks::endpoints)
                .unwrap_or_default(),
        }
    }

    /// Entries armed on a container (`id` with or without `runtime://`).
    pub fn armed_for_container(&self, id: &str) -> usize {
        self.shared
            .table()
            .entries()
            .filter(|e| {
                let cid = e.owner.container_id();
                !cid.is_empty() && (cid == id || cid.rsplit("://").next() == Some(id))
            })
            .filter(|e| e.key().is_some())
            .count()
    }

    /// A handle that applies the cluster's wanted pod traps to this runtime.
    pub fn pod_controller(&self) -> PodController {
        PodController::new(
            Arc::clone(&self.shared),
            self.proc_root.clone(),
            self.host_root.clone(),
        )
    }

    /// Node facts used in alerts.
    pub fn node(&self) -> &NodeContext {
        &self.node
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // a rescan waiting on a worker returns at once
        self.shared.stalls.close();
        if let Some(h) = self.rescanner.take() {
            let _ = h.join();
        }
    }
}
