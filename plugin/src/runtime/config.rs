//! The runtime's settings, what arming reported, and its counters.

use std::path::PathBuf;
use std::time::Duration;

use crate::callback::{CallbackConfig, EndpointCounts};
use crate::policy::TrapRef;
use crate::trap::{EngineConfig, KernelStats};

/// How the runtime runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Engine settings.
    pub engine: EngineConfig,
    /// Capacity of the queue between the ring reader and the consumer.
    pub queue_capacity: usize,
    /// The reader thread's ring poll timeout (the reader is woken when it
    /// caught up or past a fill threshold).
    pub poll: Duration,
    /// The consumer reads the eBPF tiers' ring buffer itself in
    /// [`super::Runtime::next_event`] (no reader thread): for a consumer
    /// that comes back to wait for events, as Falco's `next_batch` and
    /// `kive run`'s print loop do (a spare thread drains the ring while it
    /// is away; see [`RuntimeConfig::caller_read_fits`]). A consumer that
    /// may never call again (tests, tools) keeps the thread, which also
    /// records the kernel's tamper events for the rescan at once.
    pub read_in_caller: bool,
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
    /// The rescan's safety net: how often every armed entry is looked at
    /// (one `fstatat`) even when no change notification named it.
    pub rescan_full: Duration,
    /// At most this many change-notification marks (directories and files
    /// of armed paths); entries past it are looked at every pass.
    pub notify_max_marks: usize,
    /// At most this many mount namespaces watched for mounts (one open
    /// `mountinfo` each); entries past it are looked at every pass.
    pub notify_max_mount_watches: usize,
}

/// The smallest ring buffer a consumer reads itself (1 MiB, ~730 records:
/// what 360,000 events a second bring in the spare reader's 2 ms).
pub const CALLER_READ_MIN_RING: u32 = 1 << 20;

impl RuntimeConfig {
    /// Whether a consumer that always waits for events (Falco's
    /// `next_batch`, `kive run`) may read the ring itself with these
    /// settings: a ring that holds what comes while the consumer is away,
    /// and a queue that takes a whole read. Otherwise a reader thread woken
    /// past a quarter of the ring reads.
    pub fn caller_read_fits(&self) -> bool {
        self.engine.ring_bytes >= CALLER_READ_MIN_RING
            && self.queue_capacity >= crate::trap::ring_reader::READ_LIMIT
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            queue_capacity: 65536,
            poll: Duration::from_millis(10),
            read_in_caller: false,
            rescan: Duration::from_secs(1),
            host_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            node_name: crate::node::host::node_name(),
            callbacks: Some(CallbackConfig::default()),
            loss_report: Duration::from_secs(1),
            resolve_deadline: Duration::from_secs(5),
            rescan_full: Duration::from_secs(600),
            notify_max_marks: 1 << 18,
            notify_max_mount_watches: 8192,
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
    /// ([`super::Runtime::start_until`]).
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
    /// Events in the consumer queue (taken from the ring, not yet by the
    /// consumer).
    pub queued: usize,
    /// Ring records the consumer read itself (`read_in_caller`).
    pub caller_read_records: u64,
    /// Ring records the spare thread, or a rescan catching up, moved into
    /// the queue while the consumer was away (`read_in_caller`).
    pub spare_read_records: u64,
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
    /// [`super::ratelimit::MAX_WINDOWS`]).
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
    /// Capacity of the kernel trap map (`maxTraps`; 0 on the fanotify
    /// tier, which has no map).
    pub trap_map_capacity: u64,
    /// Distinct keys (files) armed in the kernel: the map's fill.
    pub trap_map_keys: usize,
    /// Arm attempts the trap map refused because it was full (each logged
    /// naming the trap; the entry stays pending and is retried).
    pub trap_map_full: u64,
    /// Entries the rescans looked at and found unchanged (one `statx` of
    /// the name in its directory, no re-resolution).
    pub rescan_unchanged: u64,
    /// Entries the rescans resolved again in full (something changed, or
    /// the entry is pending or of a kind always re-resolved).
    pub rescan_resolved: u64,
    /// Container roots found by rescans through `cgroup.procs` (a process
    /// started after the container's traps were planned, or a restart of
    /// the process the root was opened through).
    pub rescan_roots_found: u64,
    /// Entries re-checked because a change notification named them (a
    /// name or a file changed, mounts changed, a kernel tamper event).
    pub rescan_notified: u64,
    /// Passes that looked at every armed entry: the safety net
    /// ([`RuntimeConfig::rescan_full`]), or a notification queue overflow.
    pub rescan_full_passes: u64,
    /// Notification queue overflows (each followed by a full pass).
    pub notify_overflows: u64,
    /// Notifications read.
    pub notify_events: u64,
    /// Notification marks placed (directories and files of armed paths).
    pub notify_marks: usize,
    /// `mountinfo` files held open to watch mounts (one per mount
    /// namespace).
    pub notify_mount_watches: usize,
    /// Armed entries watched by notification.
    pub notify_watched: usize,
    /// Armed entries that could not be watched (a limit, a filesystem
    /// without file handles, notification off): looked at every pass.
    pub notify_unwatched: usize,
    /// Time spent placing notification marks (opening the directories of
    /// newly armed paths, marking them and their files), in µs: done by
    /// the rescan thread, not while arming.
    pub notify_mark_time_us: u64,
}
