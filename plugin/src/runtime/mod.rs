//! The running tripwire: loads the engine, arms the planned traps, re-arms
//! them when their files are replaced, and turns kernel events into alerts.
//!
//! Threads: the engine's ring reader only decodes and queues (bounded);
//! a rescan thread re-resolves armed paths; the consumer (`kive run` or
//! Falco's `next_batch`) pulls events and enriches them.

pub mod accessor;
mod arm;
pub mod enrich;
mod exits;
pub mod follow;
pub mod loss;
mod pod_diff;
pub mod pods;
pub mod ratelimit;
mod sets;
mod stalls;
pub mod table;
pub mod tamper;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::alert::text::escape;
use crate::alert::{rfc3339_nanos, AccessorMetadata, AlertMetadata, KiveAlert, LossMetadata};
use crate::callback::{CallbackConfig, Callbacks, EndpointCounts};
use crate::node::host::{boot_id, BootClock};
use crate::node::procfs::process_details_of;
use crate::node::resolve::new_path_of;
use crate::node::Root;
use crate::policy::{CompiledTrap, TrapAction, TrapRef};
use crate::trap::{Engine, EngineConfig, Hook, KernelStats, RawEvent, Tier, TrapError, TrapKey};

pub use accessor::Accessors;
pub use enrich::{accessor_metadata, build_alert, CgroupFacts, NodeContext};
pub use loss::LossTracker;
pub use pods::{DesiredEntry, PodController, PodDesired, PodReconcileReport};
pub use ratelimit::{RateLimiter, Verdict};
pub use table::{ContainerOwner, Entry, EntryState, Followed, Owner, TrapTable};

/// How the runtime runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Engine settings.
    pub engine: EngineConfig,
    /// Capacity of the queue between the ring reader and the consumer.
    pub queue_capacity: usize,
    /// Ring poll timeout (the reader is woken only past a fill threshold).
    pub poll: Duration,
    /// How often armed paths are re-resolved (replacement, deletion).
    pub rescan: Duration,
    /// The host's root (`/`).
    pub host_root: PathBuf,
    /// The proc root for process details.
    pub proc_root: PathBuf,
    /// Node name for alerts.
    pub node_name: String,
    /// How trap callbacks are sent (`None`: never sent).
    pub callbacks: Option<CallbackConfig>,
    /// At most one loss report (alert + WARN) per this period.
    pub loss_report: Duration,
    /// How long an entry's file work (resolving, re-arming) may take before
    /// the entry is marked stalled and skipped until it returns (a hung
    /// filesystem stalls only its own entries).
    pub resolve_deadline: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            queue_capacity: 65536,
            poll: Duration::from_millis(10),
            rescan: Duration::from_secs(1),
            host_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            node_name: crate::node::host::node_name(),
            callbacks: Some(CallbackConfig::default()),
            loss_report: Duration::from_secs(1),
            resolve_deadline: Duration::from_secs(5),
        }
    }
}

/// What happened when the traps were armed.
#[derive(Debug, Default)]
pub struct ArmReport {
    /// Entries armed now.
    pub armed: usize,
    /// Entries pending (each with a logged reason naming policy and trap).
    pub failures: Vec<String>,
    /// Traps that target pods: they need the cluster source.
    pub needs_cluster: Vec<TrapRef>,
    /// Non-fatal remarks.
    pub warnings: Vec<String>,
    /// Entries not armed because the start was stopped
    /// ([`Runtime::start_until`]).
    pub not_armed: usize,
}

/// Counters of the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Entries armed.
    pub armed: usize,
    /// Entries pending.
    pub pending: usize,
    /// Kernel counters.
    pub kernel: KernelStats,
    /// Events lost because the consumer queue was full.
    pub queue_drops: u64,
    /// Ring records that did not decode.
    pub decode_errors: u64,
    /// Events for keys no longer armed (dropped).
    pub stale_events: u64,
    /// Re-arms after a file was replaced or recreated.
    pub rearms: u64,
    /// Callback deliveries, summed over endpoints.
    pub callbacks: EndpointCounts,
    /// Callback endpoints kept (bounded by `CallbackConfig::max_endpoints`).
    pub callback_endpoints: usize,
    /// Alerts held back by rate limits.
    pub suppressed: u64,
    /// (trap entry, process) rate-limit windows held (bounded by
    /// [`ratelimit::MAX_WINDOWS`]).
    pub rate_limit_windows: usize,
    /// Rate-limit windows evicted because the table was full.
    pub rate_limit_evicted: u64,
    /// cgroup directories in the accessor index (bounded by
    /// [`crate::node::cgroup::MAX_INDEXED`]).
    pub cgroup_index: usize,
    /// The soft open-file limit of the process.
    pub fd_limit: u64,
    /// Descriptors open in the process (one per armed entry, plus the rest).
    pub open_fds: u64,
    /// Resident memory of the process (VmRSS), in bytes.
    pub rss_bytes: u64,
    /// Entries whose file work has not returned within
    /// [`RuntimeConfig::resolve_deadline`] (a hung filesystem): skipped
    /// until it does.
    pub stalled: usize,
    /// Stalls seen since the start.
    pub stalls: u64,
}

#[derive(Default)]
struct Counters {
    suppressed: AtomicU64,
    queue_drops: AtomicU64,
    decode_errors: AtomicU64,
    stale: AtomicU64,
    rearms: AtomicU64,
}

pub(crate) struct Shared {
    engine: Engine,
    table: Mutex<TrapTable>,
    counters: Arc<Counters>,
    /// Tamper events seen by the rescan, into the consumer's queue.
    tamper_tx: SyncSender<RawEvent>,
    /// The node's root: overlay layers are resolved in it.
    host_root: Option<Arc<Root>>,
    /// Tiers with kernel tamper hooks: what the kernel reported, so the
    /// rescan does not report it again ([`tamper`]).
    kernel_tampers: Option<Arc<Mutex<tamper::KernelTampers>>>,
    /// Entries whose file work hangs, and the workers that run it.
    stalls: stalls::Stalls,
}

impl Shared {
    pub(crate) fn table(&self) -> MutexGuard<'_, TrapTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
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
        result
    }

    /// Runs `work` for each entry on a worker with a deadline
    /// ([`stalls`]): the result of each, `None` for an entry stalled (now
    /// or already) or not run because kive is closing.
    pub(crate) fn isolated(
        self: &Arc<Self>,
        ids: &[u32],
        work: fn(&Shared, u32) -> Result<bool, String>,
    ) -> Vec<(u32, Option<Result<bool, String>>)> {
        // a stuck worker holds the runtime only while it runs an entry
        let me = Arc::downgrade(self);
        let work: stalls::Work = Arc::new(move |id| match me.upgrade() {
            Some(shared) => {
                let result = work(&shared, id);
                // a container that exited meanwhile: back to pending
                shared.unless_exited(id, result)
            }
            None => Ok(false),
        });
        let name = |id: u32| {
            self.table()
                .get(id)
                .map(|e| format!("{} ({})", e.trap.origin, e.trap.path))
                .unwrap_or_else(|| format!("entry {id}"))
        };
        self.stalls.run_each(ids, &work, &name)
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

/// The host root with kive's own mountinfo when it is kive's `/` (then
/// the node's overlay mounts are seen as kive sees them).
fn host_mounts(root: Root, cfg: &RuntimeConfig) -> Root {
    if cfg.host_root == std::path::Path::new("/") {
        root.with_own_mounts(&cfg.proc_root)
    } else {
        root
    }
}

/// A running tripwire.
pub struct Runtime {
    shared: Arc<Shared>,
    events: Receiver<RawEvent>,
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
        let (tx, rx) = sync_channel::<RawEvent>(cfg.queue_capacity.max(1));
        let c = Arc::clone(&counters);
        let tamper_tx = tx.clone();
        let kernel_tampers = kernel_sees_tamper(engine.tier())
            .then(|| Arc::new(Mutex::new(tamper::KernelTampers::default())));
        let seen = kernel_tampers.clone();
        engine.start_reader(cfg.poll, move |data| match RawEvent::decode(data) {
            Ok(ev) => {
                if let (Some(seen), Some(_)) = (&seen, &ev.tamper) {
                    // read at once, before the queue: the rescan asks
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.record(ev.key, ev.ts_boot_ns);
                }
                if let Err(TrySendError::Full(_)) = tx.try_send(ev) {
                    c.queue_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                c.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let tier = engine.tier();
        let mut report = ArmReport::default();
        let host_root = match Root::open(&cfg.host_root) {
            Ok(r) => Some(Arc::new(host_mounts(r, cfg))),
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
            kernel_tampers,
            stalls: stalls::Stalls::new(cfg.resolve_deadline, Arc::clone(&stop)),
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
        self.events.recv_timeout(timeout).ok()
    }

    /// The next kernel event if one is queued.
    pub fn try_next_event(&self) -> Option<RawEvent> {
        self.events.try_recv().ok()
    }

    /// A kernel tamper event with the new path of a rename or link filled
    /// in: the name the hook captured, in its directory when that is where
    /// the file's pin is (else the bare name). `None` for other events.
    fn kernel_new_path(&self, raw: &RawEvent) -> Option<RawEvent> {
        let t = raw.tamper.as_ref().filter(|t| !t.new_name.is_empty())?;
        // the table only hands out the pin: no file work under its lock
        let pin = self.shared.table().shared_pin(raw.key);
        let path = pin
            .and_then(|p| new_path_of(&p, raw.key.dev, &t.new_name, t.new_dir_ino))
            .unwrap_or_else(|| t.new_name.clone());
        let mut placed = raw.clone();
        if let Some(t) = placed.tamper.as_mut() {
            t.new_path = path;
        }
        Some(placed)
    }

    /// The alerts of one event: one per entry armed on its key (a tamper
    /// event: for the entry that saw it). An event for a key no longer
    /// armed gives none (and is counted).
    pub fn alerts_for(&self, raw: &RawEvent) -> Vec<KiveAlert> {
        let rescan = raw.hook == Hook::Rescan;
        let placed = (!rescan).then(|| self.kernel_new_path(raw)).flatten();
        let raw = placed.as_ref().unwrap_or(raw);
        // (entry id, trap, owner, the key is an inode that left the path)
        let hits: Vec<(u32, Arc<CompiledTrap>, Owner, bool)> = {
            let table = self.shared.table();
            let hit = |e: &Entry| {
                let away = e.follows(raw.key);
                (e.id, Arc::clone(&e.trap), e.owner.clone(), away)
            };
            if rescan {
                table.get(raw.trap_id).map(hit).into_iter().collect()
            } else {
                table.entries_for(raw.key).map(hit).collect()
            }
        };
        if hits.is_empty() {
            self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        // the kernel captured the process at the access; /proc only fills gaps
        let gaps = raw.exe.is_empty() || raw.cwd.is_empty() || raw.args.is_empty();
        let details = if gaps && !rescan {
            process_details_of(&self.proc_root, raw.tgid, &raw.comm, raw.ts_boot_ns)
        } else {
            Default::default()
        };
        let accessor = if rescan { None } else { self.accessor(raw) };
        let mut alerts = Vec::with_capacity(hits.len());
        let mut origins = Vec::with_capacity(hits.len());
        for (id, trap, owner, away) in &hits {
            let mut suppressed = None;
            if let (Some(limit), false) = (trap.rate_limit, rescan) {
                let mut rl = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
                match rl.check(limit, *id, raw.tgid, raw.ts_boot_ns) {
                    Verdict::Suppress => {
                        self.shared
                            .counters
                            .suppressed
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Verdict::Send { suppressed: n } => suppressed = (n > 0).then_some(n),
                }
            }
            let mut a = build_alert(raw, trap, owner, &self.node, &details, accessor.as_ref());
            // the kernel's flood limit and the trap's rate limit add up
            if let Some(n) = suppressed {
                a.metadata.suppressed = Some(a.metadata.suppressed.unwrap_or(0).saturating_add(n));
            }
            if *away {
                // the trapped inode, renamed or linked away from its path
                a.metadata.armed_as = trap.path.clone();
            }
            alerts.push(a);
            origins.push(&trap.origin);
        }
        if let Some(cb) = &self.callbacks {
            for (a, origin) in alerts.iter().zip(&origins) {
                if !a.metadata.callback.is_empty() {
                    cb.send_from(&origin.to_string(), &a.metadata.callback, &a.to_json());
                }
            }
        }
        alerts
    }

    /// A loss report when trap hits were lost since the previous one (ring
    /// buffer full, consumer queue full, held back by the kernel's flood
    /// limit), at most once per [`RuntimeConfig::loss_report`]; each one
    /// is also logged at WARN. Consumers call this between events: it
    /// reads the counters only once per period.
    pub fn loss_report(&self) -> Option<KiveAlert> {
        let now = std::time::Instant::now();
        let mut tracker = self.loss.lock().unwrap_or_else(|p| p.into_inner());
        if !tracker.due(now) {
            return None;
        }
        let m = self.metrics();
        let loss = tracker.check(
            now,
            LossMetadata {
                ring: m.kernel.drops,
                queue: m.queue_drops,
                limited: m.kernel.limited,
            },
        )?;
        drop(tracker);
        tracing::warn!(
            "{} trap hit(s) lost since the last report: ring={} (ring buffer full) queue={} (consumer queue full) limited={} (flood limit per trap and process)",
            loss.total(),
            loss.ring,
            loss.queue,
            loss.limited
        );
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Some(KiveAlert {
            alert_version: crate::alert::ALERT_VERSION.to_string(),
            timestamp: rfc3339_nanos(wall),
            metadata: AlertMetadata {
                kernel_id: self.node.kernel_id.clone(),
                loss: Some(loss),
                ..Default::default()
            },
            node: crate::alert::NodeMetadata {
                name: self.node.node_name.clone(),
            },
            ..Default::default()
        })
    }

    /// Who opened the file (see [`Accessors`]).
    fn accessor(&self, raw: &RawEvent) -> Option<AccessorMetadata> {
        self.accessors.resolve(raw, |id| {
            let table = self.shared.table();
            let owner = table.entries().find_map(|e| match &e.owner {
                Owner::Container(o) if o.container_id.rsplit("://").next() == Some(id) => {
                    Some((**o).clone())
                }
                _ => None,
            });
            owner
        })
    }

    /// Re-resolves every entry now (the rescan thread does it periodically).
    pub fn rescan_now(&self) {
        self.shared.rescan();
    }

    /// Keys in the kernel map (for checks).
    pub fn kernel_keys(&self) -> Vec<TrapKey> {
        self.shared.engine.armed_keys()
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        let (armed, pending) = self.shared.table().counts();
        let c = &self.shared.counters;
        let (rate_limit_windows, rate_limit_evicted) = {
            let mut rl = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            // idle windows go even when no rate-limited alert comes any more
            rl.sweep(crate::node::host::system_clocks().0);
            (rl.len(), rl.evicted())
        };
        Metrics {
            armed,
            pending,
            kernel: self.shared.engine.kernel_stats(),
            queue_drops: c.queue_drops.load(Ordering::Relaxed),
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
