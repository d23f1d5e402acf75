//! Process details from a proc root (best effort: a short-lived process may
//! be gone by the time it is read, and then the fields stay empty).

use std::path::{Path, PathBuf};

/// What /proc still knows of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDetails {
    /// `/proc/<pid>/exe`.
    pub binary: String,
    /// `/proc/<pid>/cwd`.
    pub cwd: String,
    /// `/proc/<pid>/cmdline`, NULs turned into spaces.
    pub arguments: String,
}

/// Reads a process's details under `proc_root` (normally `/proc`).
pub fn process_details(proc_root: &Path, tgid: u32) -> ProcessDetails {
    let dir: PathBuf = proc_root.join(tgid.to_string());
    let link = |name: &str| {
        std::fs::read_link(dir.join(name))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let arguments = std::fs::read(dir.join("cmdline"))
        .map(|b| cmdline_to_string(&b))
        .unwrap_or_default();
    ProcessDetails {
        binary: link("exe"),
        cwd: link("cwd"),
        arguments,
    }
}

/// Who a process is, from `/proc/<pid>/stat`: its command name and when it
/// started (ns since boot, to the clock tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The task's comm (at most 15 bytes).
    pub comm: String,
    /// Start time in ns of CLOCK_BOOTTIME, rounded down to the tick.
    pub start_boot_ns: u64,
}

/// Parses the text of `/proc/<pid>/stat`: `pid (comm) state ... starttime`
/// (field 22, in clock ticks). `None` when it does not parse.
pub fn parse_stat(text: &str, ticks_per_sec: u64) -> Option<ProcessIdentity> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // fields after the comm start with field 3 (state): starttime is 22
    let start_ticks: u64 = text
        .get(close + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let per_tick = 1_000_000_000u64.checked_div(ticks_per_sec)?;
    Some(ProcessIdentity {
        comm,
        start_boot_ns: start_ticks.checked_mul(per_tick)?,
    })
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(100)
}

/// The identity of process `tgid` under `proc_root`, if it is there.
pub fn process_identity(proc_root: &Path, tgid: u32) -> Option<ProcessIdentity> {
    // the `comm` is the process's to set, UTF-8 or not
    let bytes = std::fs::read(proc_root.join(tgid.to_string()).join("stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes), ticks_per_sec())
}

/// Whether the process now at the pid can be the one of an access by
/// `comm` at `at_boot_ns`: it started no later than the access and has that
/// command name (a process that reused the pid started after; one that
/// exec'd since has another name).
pub fn is_same_process(id: &ProcessIdentity, comm: &str, at_boot_ns: u64) -> bool {
    id.start_boot_ns <= at_boot_ns && id.comm == comm
}

/// [`process_details`] of the process that made an access (`comm` at
/// `at_boot_ns`), or nothing: the details of a different process that
/// reused the pid (or of the same pid after an exec) are never mixed in.
/// The identity is checked before and after the reads.
pub fn process_details_of(
    proc_root: &Path,
    tgid: u32,
    comm: &str,
    at_boot_ns: u64,
) -> ProcessDetails {
    let Some(before) = process_identity(proc_root, tgid) else {
        return ProcessDetails::default();
    };
    if !is_same_process(&before, comm, at_boot_ns) {
        return ProcessDetails::default();
    }
    let details = process_details(proc_root, tgid);
    if process_identity(proc_root, tgid).as_ref() != Some(&before) {
        return ProcessDetails::default();
    }
    details
}

/// `a\0b\0c\0` → `a b c`.
pub fn cmdline_to_string(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_bytes() {
        assert_eq!(cmdline_to_string(b"cat\0/secret.txt\0"), "cat /secret.txt");
        assert_eq!(cmdline_to_string(b""), "");
    }

    const STAT: &str = "4242 (cat (x)) R 1 4242 4242 0 -1 4194304 90 0 0 0 0 0 0 0 20 0 1 0 123456 5578752 210 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_gives_comm_and_start_time() {
        let id = parse_stat(STAT, 100).expect("parses");
        assert_eq!(id.comm, "cat (x)", "the comm may hold parentheses");
        assert_eq!(id.start_boot_ns, 123_456 * 10_000_000);
        assert_eq!(parse_stat("4242 (cat) R 1", 100), None, "too short");
        assert_eq!(parse_stat(STAT, 0), None);
    }

    /// A fake proc root holding pid 4242 as `comm`, started at `start_ticks`.
    fn fake_proc(comm: &str, start_ticks: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("temp dir");
        let p = d.path().join("4242");
        std::fs::create_dir(&p).expect("mkdir");
        let stat =
            format!("4242 ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 0 0");
        std::fs::write(p.join("stat"), stat).expect("stat");
        std::fs::write(p.join("cmdline"), b"other\0--flag\0").expect("cmdline");
        std::os::unix::fs::symlink("/usr/bin/other", p.join("exe")).expect("exe");
        std::os::unix::fs::symlink("/srv", p.join("cwd")).expect("cwd");
        d
    }

    #[test]
    fn a_process_that_reused_the_pid_gives_no_details() {
        let tick = 1_000_000_000 / ticks_per_sec();
        let access = 500 * tick;
        // started after the access: not the accessor
        let later = fake_proc("cat", 501);
        assert_eq!(
            process_details_of(later.path(), 4242, "cat", access),
            ProcessDetails::default()
        );
        // started before, but another program now (an exec since, or reuse)
        let other = fake_proc("other", 400);
        assert_eq!(
            process_details_of(other.path(), 4242, "cat", access),
            ProcessDetails::default()
        );
        // gone
        assert_eq!(
            process_details_of(other.path(), 4343, "cat", access),
            ProcessDetails::default()
        );
        // the accessor itself: its details fill in
        let same = fake_proc("cat", 400);
        assert_eq!(
            process_details_of(same.path(), 4242, "cat", access),
            ProcessDetails {
                binary: "/usr/bin/other".into(),
                cwd: "/srv".into(),
                arguments: "other --flag".into(),
            }
        );
    }

    #[test]
    fn this_process_is_itself_by_identity() {
        let me = std::process::id();
        let id = process_identity(Path::new("/proc"), me).expect("own stat");
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        assert!(id.start_boot_ns <= now_ns, "{id:?} vs {now_ns}");
        let d = process_details_of(Path::new("/proc"), me, &id.comm, now_ns);
        assert_eq!(d, process_details(Path::new("/proc"), me));
        assert_eq!(
            process_details_of(
                Path::new("/proc"),
                me,
                &id.comm,
                id.start_boot_ns.saturating_sub(1_000_000_000)
            ),
            ProcessDetails::default(),
            "an access before this process started was not by it"
        );
    }

    #[test]
    fn reads_this_process() {
        let d = process_details(Path::new("/proc"), std::process::id());
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(d.binary, exe.to_string_lossy());
        assert_eq!(
            d.cwd,
            std::env::current_dir().expect("cwd").to_string_lossy()
        );
        assert!(!d.arguments.is_empty());
        assert_eq!(
            process_details(Path::new("/proc"), u32::MAX),
            ProcessDetails::default()
        );
    }
}
