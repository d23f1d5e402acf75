//! Room for kive's open files as the plan grows (one `O_PATH` pin per armed
//! file, one root per container): past the hard limit where the process may;
//! and this process's resident memory, for the benchmarks. The soft limit
//! is raised to the hard one at start by [`super::fds::raise_nofile`].

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Makes room for at least `want` open files: the soft limit up to the hard
/// one, and past it (both limits) where the process may
/// (`CAP_SYS_RESOURCE`, up to `fs.nr_open`). Returns the soft limit in force
/// (`None`: unlimited).
pub fn ensure_nofile(want: u64) -> Option<u64> {
    if let Err(e) = super::fds::raise_nofile() {
        tracing::warn!("raising the open-file limit: {e}");
    }
    let soft = getrlimit(Resource::Nofile).current;
    if soft.is_none_or(|s| s >= want) {
        return soft;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = want.min(nr_open);
    let raised = Rlimit {
        current: Some(target),
        maximum: Some(target),
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        tracing::warn!(
            "raising the open-file limit to {target} for the armed traps (needs CAP_SYS_RESOURCE): {e}"
        );
    }
    getrlimit(Resource::Nofile).current
}

/// Resident set size of this process in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_what_is_there_keeps_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum;
        assert_eq!(
            ensure_nofile(16),
            hard,
            "the soft limit reaches the hard one"
        );
    }

    #[test]
    fn rss_of_this_process() {
        assert!(
            rss_bytes() > 1024 * 1024,
            "a test binary uses more than 1 MiB"
        );
    }
}
