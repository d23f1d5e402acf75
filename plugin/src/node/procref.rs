//! The process a root was opened through, for its mountinfo and to know
//! when it exits. kive's own `/proc/self` is held open (one fd); a
//! container's process is named by its `/proc` directory and its start
//! time, and opened only when its mountinfo is read: a container root then
//! holds one fd (the root directory itself, the anchor of every resolution
//! in it), not two. A pid reused by another process since has another start
//! time, and is refused as an exited one.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};

use super::procfs::parse_stat;
use super::resolve::io_err;

/// A `/proc/<pid>` directory, held or named.
#[derive(Debug)]
pub enum ProcDir {
    /// Held open (the descriptor names that very process).
    Held(OwnedFd),
    /// Named: `/proc/<pid>` and the process's start time (clock ticks as
    /// ns since boot, from its `stat`).
    Named {
        /// `/proc/<pid>`.
        dir: PathBuf,
        /// Start time of the process it must still be.
        start_boot_ns: u64,
    },
}

impl From<OwnedFd> for ProcDir {
    fn from(fd: OwnedFd) -> Self {
        Self::Held(fd)
    }
}

/// Any tick rate compares start times alike (both sides are parsed with it).
const TICKS: u64 = 100;

fn start_of(dir: impl AsFd) -> io::Result<u64> {
    // one line of ≈ 300 bytes (a `comm` of 64 at most)
    // the `comm` is the process's to set, valid UTF-8 or not: only the
    // fields after it are read
    let bytes = super::procread::read_bytes_at(dir, "stat", 1024)?;
    parse_stat(&String::from_utf8_lossy(&bytes), TICKS)
        .map(|p| p.start_boot_ns)
        .ok_or_else(|| io::Error::other("unparsable /proc/<pid>/stat"))
}

impl ProcDir {
    /// Names the process whose `/proc/<pid>` directory `held` is open
    /// (`dir` is its path): its start time is read through `held`.
    pub fn named(held: &OwnedFd, dir: PathBuf) -> io::Result<Self> {
        Ok(Self::Named {
            start_boot_ns: start_of(held)?,
            dir,
        })
    }

    /// The directory, open (`O_PATH`); for a named process, only while it
    /// is still the process named (`ESRCH` once it exited, its pid reused
    /// or not).
    pub fn open(&self) -> io::Result<OwnedFd> {
        match self {
            Self::Held(fd) => rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(io_err),
            Self::Named { dir, start_boot_ns } => {
                let fd = rustix::fs::open(
                    dir,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err)?;
                // read through the descriptor: the identity checked is the
                // one of the directory returned
                if start_of(&fd)? != *start_boot_ns {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(fd)
            }
        }
    }

    /// Whether the process has exited (`false` when that cannot be told).
    pub fn exited(&self) -> bool {
        let gone =
            |e: rustix::io::Errno| e == rustix::io::Errno::NOENT || e == rustix::io::Errno::SRCH;
        match self {
            // the descriptor names this very process: a reused pid is
            // another directory, so no reuse can make a dead one look alive
            Self::Held(dir) => match rustix::fs::openat(
                dir,
                "stat",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(_) => false,
                Err(e) => gone(e),
            },
            Self::Named { .. } => match self.open() {
                Ok(_) => false,
                Err(e) => rustix::io::Errno::from_io_error(&e).is_some_and(gone),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Command;

    fn open_dir(pid: u32) -> OwnedFd {
        rustix::fs::open(
            format!("/proc/{pid}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open /proc/<pid>")
    }

    #[test]
    fn a_named_process_is_opened_while_it_runs_and_exited_after() {
        let mut child = Command::new("sleep").arg("1000").spawn().expect("sleep");
        let pid = child.id();
        let named = ProcDir::named(&open_dir(pid), format!("/proc/{pid}").into()).expect("named");
        assert!(!named.exited(), "running");
        let fd = named.open().expect("opened while it runs");
        assert!(crate::node::mounts::read_mountinfo(&fd).is_ok());
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(named.exited(), "exited and reaped");
        assert!(named.open().is_err());
    }

    #[test]
    fn a_process_whose_name_is_not_utf8_is_named() {
        // a process sets its `comm` (here by its executable's name): bytes
        // that are not UTF-8 must not make its container's root unreadable
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join(std::ffi::OsStr::from_bytes(b"\xff\xfe)x"));
        std::os::unix::fs::symlink(which_sleep(), &exe).expect("symlink");
        let mut child = Command::new(&exe).arg("1000").spawn().expect("spawn");
        let pid = child.id();
        let named = ProcDir::named(&open_dir(pid), format!("/proc/{pid}").into());
        let opened = named.as_ref().map(|n| n.open().is_ok());
        let identity = crate::node::procfs::process_identity(std::path::Path::new("/proc"), pid);
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(
            matches!(opened, Ok(true)),
            "a non-UTF-8 comm is named and opened: {:?}",
            named.err()
        );
        assert!(
            identity.is_some(),
            "its identity (an alert's process details) is read too"
        );
    }

    fn which_sleep() -> std::path::PathBuf {
        ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
            .expect("sleep is installed")
    }

    #[test]
    fn a_pid_with_another_start_time_is_another_process() {
        let me = std::process::id();
        let ProcDir::Named { dir, start_boot_ns } =
            ProcDir::named(&open_dir(me), format!("/proc/{me}").into()).expect("named")
        else {
            panic!("a named process");
        };
        // this pid, as if it had been reused by a process started later
        let reused = ProcDir::Named {
            dir,
            start_boot_ns: start_boot_ns + 1_000_000_000,
        };
        let e = reused.open().expect_err("another process");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
        assert!(reused.exited(), "the process named is gone");
    }
}
