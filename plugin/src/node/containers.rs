//! Finding a process of each container on this node: every process's
//! cgroup path names its container (see [`super::cgroup`]).

use std::collections::HashMap;
use std::path::Path;

use super::cgroup::container_from_cgroup_path;

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
