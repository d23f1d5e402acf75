//! Finding a process of each container on this node: every process's
//! cgroup path names its container (see [`super::cgroup`]).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::cgroup::container_from_cgroup_path;
use super::resolve::{io_err, ResolveError, Root};

/// The root directory of process `pid`, checked to belong to container
/// `container_id` (64 hex) *after* the root is open: `/proc/<pid>` is
/// opened once and both `root` and `cgroup` are read through that
/// directory fd, which stays tied to the process it was opened for. A pid
/// that exited and was reused by another process (the host's, say) since
/// the scan fails the check, so a trap is never resolved in the wrong root.
pub fn open_container_root(
    proc_root: &Path,
    pid: u32,
    container_id: &str,
) -> Result<Root, ResolveError> {
    let dir_path = proc_root.join(pid.to_string());
    let root_path = dir_path.join("root");
    let fail = |source: io::Error| ResolveError::Root {
        root: root_path.clone(),
        source,
    };
    let at = |e: rustix::io::Errno| fail(io_err(e));
    let dir = rustix::fs::open(
        &dir_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at)?;
    let root = rustix::fs::openat(
        &dir,
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at)?;
    let cgroup = rustix::fs::openat(
        &dir,
        "cgroup",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at)?;
    let mut text = String::new();
    std::fs::File::from(cgroup)
        .read_to_string(&mut text)
        .map_err(fail)?;
    match container_of_cgroup_file(&text) {
        Some(id) if id == container_id => Ok(Root::from_fd(root, root_path).with_proc_dir(dir)),
        other => Err(fail(io::Error::other(format!(
            "pid {pid} is not in container {container_id} (now in {})",
            other.as_deref().unwrap_or("no container")
        )))),
    }
}

/// Container id (64 hex) → the lowest pid of a process in it.
#[derive(Debug, Default, Clone)]
pub struct ContainerPids {
    by_id: HashMap<String, u32>,
}

/// The container named by a `/proc/<pid>/cgroup` text (v1 or v2 lines).
pub fn container_of_cgroup_file(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        container_from_cgroup_path(Path::new(path)).map(|c| c.id)
    })
}

impl ContainerPids {
    /// Scans every process under `proc_root`.
    pub fn scan(proc_root: &Path) -> Self {
        let mut by_id: HashMap<String, u32> = HashMap::new();
        let Ok(rd) = std::fs::read_dir(proc_root) else {
            return Self { by_id };
        };
        for entry in rd.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("cgroup")) else {
                continue;
            };
            if let Some(id) = container_of_cgroup_file(&text) {
                by_id
                    .entry(id)
                    .and_modify(|p| *p = (*p).min(pid))
                    .or_insert(pid);
            }
        }
        Self { by_id }
    }

    /// A pid of the container, if one of its processes runs.
    pub fn pid_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Number of containers seen.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no container was seen.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";

    fn fake_process(proc_root: &Path, pid: u32, id: &str) {
        let d = proc_root.join(pid.to_string());
        std::fs::create_dir_all(d.join("root/etc")).expect("mkdir");
        let cgroup = format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope\n");
        std::fs::write(d.join("cgroup"), cgroup).expect("cgroup");
    }

    #[test]
    fn a_container_root_opens_only_for_a_process_still_in_that_container() {
        let proc_root = tempfile::tempdir().expect("temp");
        fake_process(proc_root.path(), 42, ID);
        let root = open_container_root(proc_root.path(), 42, ID).expect("in the container");
        assert_eq!(root.path(), proc_root.path().join("42/root"));
        // the pid now belongs to another container's process (pid reuse)
        let other = ID.replace('0', "f");
        let e = open_container_root(proc_root.path(), 42, &other).expect_err("another container");
        assert!(e.to_string().contains("42/root"), "{e}");
        let e = open_container_root(proc_root.path(), 7, ID).expect_err("no such process");
        assert!(e.to_string().contains("7/root"), "{e}");
        // this test process: a host process, in no container
        let e = open_container_root(Path::new("/proc"), std::process::id(), ID)
            .expect_err("not a container process");
        assert!(std::error::Error::source(&e).is_some(), "{e}");
    }

    #[test]
    fn v2_and_v1_cgroup_files() {
        let v2 = format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(container_of_cgroup_file(&v2).as_deref(), Some(ID));
        let v1 = format!(
            "12:pids:/kubepods/burstable/pod1/{ID}\n1:name=systemd:/kubepods/burstable/pod1/{ID}\n0::/\n"
        );
        assert_eq!(container_of_cgroup_file(&v1).as_deref(), Some(ID));
        assert_eq!(
            container_of_cgroup_file("0::/user.slice/session-2.scope\n"),
            None
        );
    }

    #[test]
    fn scans_a_fake_proc_tree() {
        let d = tempfile::tempdir().expect("tmp");
        for (pid, cg) in [
            ("40", format!("0::/k/cri-containerd-{ID}.scope\n")),
            ("12", format!("0::/k/cri-containerd-{ID}.scope\n")),
            ("7", "0::/init.scope\n".to_string()),
        ] {
            std::fs::create_dir(d.path().join(pid)).expect("mkdir");
            std::fs::write(d.path().join(pid).join("cgroup"), cg).expect("write");
        }
        std::fs::create_dir(d.path().join("self")).expect("mkdir");
        let pids = ContainerPids::scan(d.path());
        assert_eq!(pids.pid_of(ID), Some(12));
        assert_eq!(pids.len(), 1);
    }
}
