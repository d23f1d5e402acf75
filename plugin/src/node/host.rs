//! Facts about this machine read from /proc.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// The kernel's boot id (KiveAlert `kernel-id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The node name: `FALCO_K8S_NODE_NAME` (set by the Falco Helm chart),
/// else `NODE_NAME` from the environment (a downward-API value in
/// a DaemonSet), else the host name.
pub fn node_name() -> String {
    node_name_from(|k| std::env::var(k).ok())
}

/// The environment variables naming the node, in order: the one the
/// falcosecurity/falco Helm chart sets, then the usual downward-API name.
pub const NODE_NAME_VARS: [&str; 2] = ["FALCO_K8S_NODE_NAME", "NODE_NAME"];

/// [`node_name`] with the environment given (testable without touching
/// the process environment).
pub fn node_name_from(env: impl Fn(&str) -> Option<String>) -> String {
    for var in NODE_NAME_VARS {
        if let Some(n) = env(var).filter(|n| !n.is_empty()) {
            return n;
        }
    }
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The mount namespace (inode number, as the kernel reports it in events)
/// of a process; `pid` 1 is the host's when `proc_root` is the host's /proc.
pub fn mnt_ns(proc_root: &std::path::Path, pid: u32) -> Option<u32> {
    ns_inode(&proc_root.join(pid.to_string()).join("ns/mnt"))
}

/// The host's mount namespace: pid 1's in `proc_root`, else (pid 1's
/// namespace unreadable, as in some sandboxes) the one kive runs in.
pub fn host_mnt_ns(proc_root: &std::path::Path) -> Option<u32> {
    mnt_ns(proc_root, 1).or_else(|| ns_inode(std::path::Path::new("/proc/self/ns/mnt")))
}

/// The node's init, `<proc_root>/1`, held open: its `mountinfo` is the
/// node's mount table, in the node's own paths, whatever root and mount
/// namespace kive runs in (with the node's `/proc`, or `hostPID`); without
/// them, pid 1 is the container's own init and its table kive's own view.
pub fn node_init(proc_root: &std::path::Path) -> Option<super::procref::ProcDir> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        proc_root.join("1"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(super::procref::ProcDir::from)
}

fn ns_inode(link: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    u32::try_from(std::fs::metadata(link).ok()?.ino()).ok()
}

/// Reads `(CLOCK_BOOTTIME ns, CLOCK_REALTIME ns)` (injectable for tests).
pub type ClockSource = Arc<dyn Fn() -> (u64, i64) + Send + Sync>;

/// The two clocks of this machine.
pub fn system_clocks() -> (u64, i64) {
    let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let real = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let ns = |t: rustix::time::Timespec| t.tv_sec.saturating_mul(1_000_000_000) + t.tv_nsec;
    (ns(boot).max(0) as u64, ns(real))
}

/// How much boot time may pass before the offset is read again.
pub const CLOCK_REFRESH_NS: u64 = 1_000_000_000;

/// Converts `CLOCK_BOOTTIME` nanoseconds (kernel event stamps) to
/// wall-clock nanoseconds since the epoch. The offset between the clocks is
/// read again once an event is [`CLOCK_REFRESH_NS`] past the last reading,
/// so a wall-clock step (NTP, an operator) shows in the next second of
/// alerts instead of shifting every later timestamp. Two vDSO clock reads
/// per second of events: cheap. Clones share the offset.
#[derive(Clone)]
pub struct BootClock {
    source: Option<ClockSource>,
    state: Arc<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    /// realtime - boottime, in ns.
    offset_ns: AtomicI64,
    /// Boot time of the last reading.
    read_at: AtomicU64,
}

impl std::fmt::Debug for BootClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootClock")
            .field("offset_ns", &self.state.offset_ns.load(Ordering::Relaxed))
            .field("follows_wall_clock", &self.source.is_some())
            .finish()
    }
}

impl BootClock {
    /// This machine's clocks, followed.
    pub fn now() -> Self {
        Self::with_source(Arc::new(system_clocks))
    }

    /// Clocks read from `source`, followed.
    pub fn with_source(source: ClockSource) -> Self {
        let c = Self {
            source: Some(source),
            state: Arc::default(),
        };
        c.refresh();
        c
    }

    /// A fixed offset, never read again (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        let state = ClockState::default();
        state.offset_ns.store(
            offset_ns.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            Ordering::Relaxed,
        );
        Self {
            source: None,
            state: Arc::new(state),
        }
    }

    fn refresh(&self) {
        if let Some(src) = &self.source {
            let (boot, real) = src();
            self.state
                .offset_ns
                .store(real.saturating_sub(boot as i64), Ordering::Relaxed);
            self.state.read_at.store(boot, Ordering::Relaxed);
        }
    }

    /// Wall-clock ns since the epoch of a boottime stamp.
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        if self.source.is_some()
            && boot_ns.saturating_sub(self.state.read_at.load(Ordering::Relaxed))
                >= CLOCK_REFRESH_NS
        {
            self.refresh();
        }
        let offset = self.state.offset_ns.load(Ordering::Relaxed);
        (i128::from(boot_ns) + i128::from(offset)).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_falco_chart_node_name_comes_first_then_node_name() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            node_name_from(env(&[("FALCO_K8S_NODE_NAME", "a"), ("NODE_NAME", "b")])),
            "a"
        );
        assert_eq!(node_name_from(env(&[("NODE_NAME", "b")])), "b");
        assert_eq!(
            node_name_from(env(&[("FALCO_K8S_NODE_NAME", ""), ("NODE_NAME", "b")])),
            "b"
        );
        assert!(!node_name_from(env(&[])).is_empty(), "the host name");
    }

    #[test]
    fn boot_clock_maps_now_to_now() {
        let c = BootClock::now();
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let boot_ns = boot.tv_sec as u64 * 1_000_000_000 + boot.tv_nsec as u64;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as u64;
        let got = c.wall_ns(boot_ns);
        assert!(got.abs_diff(wall) < 50_000_000, "{got} vs {wall}");
        assert_eq!(BootClock::with_offset(5).wall_ns(10), 15);
    }

    #[test]
    fn a_wall_clock_step_shows_within_a_second_of_events() {
        const S: u64 = 1_000_000_000;
        let boot = Arc::new(AtomicU64::new(10 * S));
        let offset = Arc::new(AtomicI64::new(1_000 * S as i64));
        let reads = Arc::new(AtomicU64::new(0));
        let (b, o, r) = (Arc::clone(&boot), Arc::clone(&offset), Arc::clone(&reads));
        let c = BootClock::with_source(Arc::new(move || {
            r.fetch_add(1, Ordering::Relaxed);
            let b = b.load(Ordering::Relaxed);
            (b, b as i64 + o.load(Ordering::Relaxed))
        }));
        assert_eq!(c.wall_ns(10 * S), 1_010 * S);
        // NTP steps the wall clock an hour ahead
        offset.store(4_600 * S as i64, Ordering::Relaxed);
        boot.store(10 * S + S / 2, Ordering::Relaxed);
        for i in 0..1000 {
            c.wall_ns(10 * S + i);
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1, "no read per event: cheap");
        boot.store(12 * S, Ordering::Relaxed);
        assert_eq!(
            c.wall_ns(12 * S),
            4_612 * S,
            "events a second later follow the stepped wall clock"
        );
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        let shared = c.clone();
        assert_eq!(shared.wall_ns(12 * S), 4_612 * S, "clones share the offset");
    }

    #[test]
    fn boot_id_is_a_uuid() {
        let id = boot_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4, "{id}");
    }
}
