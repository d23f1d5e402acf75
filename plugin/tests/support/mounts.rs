//! The mounts the engine needs, shared by the kernel tests (`support`)
//! and the Falco plugin tests (`falco_common`, which includes this file).

use std::process::Command;

/// Mounts the engine needs (bpffs, tracefs, securityfs for the LSM list);
/// idempotent. Reads `/proc/self/mounts` (no util-linux `mountpoint`, which
/// busybox systems lack).
pub fn ensure_mounts() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for (fs, dir) in [
        ("bpf", "/sys/fs/bpf"),
        ("tracefs", "/sys/kernel/tracing"),
        ("securityfs", "/sys/kernel/security"),
    ] {
        let mounted = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(dir));
        if !mounted {
            let _ = Command::new("mount").args(["-t", fs, fs, dir]).status();
        }
    }
}
