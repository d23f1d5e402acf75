//! The kernel's own accounting of kive's BPF programs: how many times each
//! ran and for how long (`struct bpf_prog_info`'s `run_cnt` and
//! `run_time_ns`). The kernel counts only while run-time statistics are on
//! (`kernel.bpf_stats_enabled`, or a [`RunTimeStats`] held open): they cost
//! two clock reads per program run, so they are off by default.

use std::os::fd::{FromRawFd, OwnedFd};

use libbpf_rs::query::{ProgInfoIter, ProgInfoQueryOptions};

use super::TrapError;

/// One attached program's counters, read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's name (e.g. `kive_lsm_file_open`).
    pub name: String,
    /// The kernel's id of the loaded program.
    pub id: u32,
    /// Times the program ran since it was loaded (while statistics were on).
    pub run_cnt: u64,
    /// Total time those runs took, in ns.
    pub run_time_ns: u64,
}

/// Run-time statistics switched on for as long as this is held (the
/// `BPF_ENABLE_STATS` command: the same switch as the
/// `kernel.bpf_stats_enabled` sysctl, turned back off when the last holder
/// closes it, so a crashed holder leaves nothing behind).
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    /// Switches the kernel's BPF run-time statistics on (needs CAP_SYS_ADMIN).
    pub fn enable() -> Result<Self, TrapError> {
        // SAFETY: bpf_enable_stats takes a plain enum value and returns a
        // new fd or a negative error; it keeps no pointer.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        if fd < 0 {
            return Err(TrapError::Stats(std::io::Error::from_raw_os_error(-fd)));
        }
        // SAFETY: `fd` was just returned by the kernel, is valid and owned
        // by nobody else; OwnedFd closes it exactly once.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// The counters of the programs with these ids (`(id, name)`), in that
/// order; a program the kernel no longer lists is left out.
pub(super) fn read(programs: &[(u32, &'static str)]) -> Vec<ProgramStats> {
    let infos: Vec<_> = ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default())
        .filter(|info| programs.iter().any(|(id, _)| *id == info.id))
        .collect();
    programs
        .iter()
        .filter_map(|(id, name)| {
            let info = infos.iter().find(|i| i.id == *id)?;
            Some(ProgramStats {
                name: (*name).to_string(),
                id: *id,
                run_cnt: info.run_cnt,
                run_time_ns: info.run_time_ns,
            })
        })
        .collect()
}
