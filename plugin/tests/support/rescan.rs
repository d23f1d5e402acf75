//! For the rescan tests: whether marks can be placed here, bind mounts
//! undone on drop, and a container cgroup whose process starts late.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::wait_until;

/// Whether this kernel and the filesystems of `dir` and of every directory
/// above it take fanotify marks with file handles (Linux 5.9; tmpfs only
/// from the kernel that gives it a filesystem id, not Debian's 6.1): asked
/// of the kernel directly, apart from kive.
pub fn marks_supported(dir: &Path) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_REPORT_FID
        | libc::FAN_REPORT_DFID_NAME;
    // SAFETY: plain flags; the fd returned is owned below.
    let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fanotify_init returned a new fd that nothing else owns.
    let group = unsafe { OwnedFd::from_raw_fd(fd) };
    dir.ancestors().all(|a| {
        let Ok(c) = std::ffi::CString::new(a.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: the group is open; `c` is NUL-terminated and outlives the call.
        let rc = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_CREATE | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        rc == 0
    })
}

/// Unmounts on drop (the test may fail half-way).
pub struct Bind<'a>(&'a Path);

impl Drop for Bind<'_> {
    fn drop(&mut self) {
        // lazily: the runtime may still hold the file open (an armed pin)
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// `mount --bind src dst`, unmounted on drop.
pub fn bind_mount<'a>(src: &Path, dst: &'a Path) -> Bind<'a> {
    let st = Command::new("mount")
        .arg("--bind")
        .arg(src)
        .arg(dst)
        .status()
        .expect("mount runs");
    assert!(
        st.success(),
        "mount --bind {} {}",
        src.display(),
        dst.display()
    );
    Bind(dst)
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let v = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    v >= (major, minor)
}

/// An empty container cgroup (named as containerd names it) whose process
/// the test starts later; removed on drop.
pub struct LateContainer {
    cgroup: std::path::PathBuf,
    child: Option<Child>,
}

impl LateContainer {
    pub fn new(id: &str) -> Self {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root =
            kive::node::cgroup::cgroup2_mount_point(&mi).expect("a cgroup v2 hierarchy is mounted");
        let cgroup = root
            .join("kive-test.slice")
            .join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&cgroup).expect("create the container's cgroup");
        Self {
            cgroup,
            child: None,
        }
    }

    pub fn start_process(&mut self) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo 0 > {}/cgroup.procs && exec sleep 100000",
                self.cgroup.display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.child = Some(child);
        let procs = self.cgroup.join("cgroup.procs");
        wait_until("the process joins the container's cgroup", || {
            std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == pid.to_string())
        });
    }
}

impl Drop for LateContainer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..500 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
