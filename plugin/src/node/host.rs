//! Facts about this machine read from /proc.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The kernel's boot id (KiveAlert `kernel-id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The node name: `NODE_NAME` from the environment (a downward-API value in
/// a DaemonSet), else the host name.
pub fn node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
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

fn ns_inode(link: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    u32::try_from(std::fs::metadata(link).ok()?.ino()).ok()
}

/// Converts `CLOCK_BOOTTIME` nanoseconds to wall-clock nanoseconds since
/// the epoch, using the two clocks read now.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// realtime - boottime, in ns.
    offset_ns: i128,
}

impl BootClock {
    /// Reads both clocks.
    pub fn now() -> Self {
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let boot_ns = boot.tv_sec as i128 * 1_000_000_000 + boot.tv_nsec as i128;
        Self {
            offset_ns: real.as_nanos() as i128 - boot_ns,
        }
    }

    /// A clock with a known offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall-clock ns since the epoch of a boottime stamp.
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_maps_now_to_now() {
        let c = BootClock::now();
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let boot_ns = boot.tv_sec as u64 * 1_000_000_000 + boot.tv_nsec as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as u64;
        let got = c.wall_ns(boot_ns);
        assert!(got.abs_diff(wall) < 50_000_000, "{got} vs {wall}");
        assert_eq!(BootClock::with_offset(5).wall_ns(10), 15);
    }

    #[test]
    fn boot_id_is_a_uuid() {
        let id = boot_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4, "{id}");
    }
}
