//! kive's own open-file limit: it holds one O_PATH descriptor per armed
//! entry, so the soft `RLIMIT_NOFILE` (often 1024) is raised to the hard
//! limit at start, and the limit and the descriptors in use are reported.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The open-file limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileRaise {
    /// Soft limit found (`None`: unlimited).
    pub before: Option<u64>,
    /// Soft limit now.
    pub after: Option<u64>,
}

/// The limit to raise the soft one to: the hard limit, or the kernel's
/// `nr_open` when the hard limit is unlimited.
pub fn nofile_target(hard: Option<u64>, nr_open: Option<u64>) -> Option<u64> {
    match (hard, nr_open) {
        (Some(h), _) => Some(h),
        (None, n) => n,
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (logged at
/// info when it changes). Idempotent; safe to call from `kive run` and from
/// the plugin.
pub fn raise_nofile() -> Result<NofileRaise, std::io::Error> {
    let lim = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let before = lim.current;
    let Some(target) = nofile_target(lim.maximum, nr_open) else {
        return Ok(NofileRaise {
            before,
            after: before,
        });
    };
    if before.is_none_or(|b| b >= target) {
        return Ok(NofileRaise {
            before,
            after: before,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: lim.maximum,
        },
    )?;
    let after = getrlimit(Resource::Nofile).current;
    tracing::info!(
        "open-file limit raised from {} to {} (one descriptor per armed trap)",
        before.map_or("unlimited".to_string(), |b| b.to_string()),
        after.map_or("unlimited".to_string(), |a| a.to_string()),
    );
    Ok(NofileRaise { before, after })
}

/// The soft open-file limit (`u64::MAX`: unlimited).
pub fn fd_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Descriptors this process holds open (0 when /proc is unreadable).
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_hard_limit_or_nr_open() {
        assert_eq!(nofile_target(Some(524_288), Some(1_048_576)), Some(524_288));
        assert_eq!(nofile_target(None, Some(1_048_576)), Some(1_048_576));
        assert_eq!(nofile_target(None, None), None);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one_and_usage_is_counted() {
        // runs in the test process: raising the soft limit is harmless
        let r = raise_nofile().expect("raising to the hard limit is allowed");
        let hard = getrlimit(Resource::Nofile).maximum;
        assert_eq!(r.after, getrlimit(Resource::Nofile).current);
        if let (Some(h), Some(a)) = (hard, r.after) {
            assert_eq!(a, h, "soft = hard");
        }
        assert_eq!(fd_limit(), r.after.unwrap_or(u64::MAX));
        assert!(open_fds() >= 3, "stdin, stdout, stderr at least");
    }
}
