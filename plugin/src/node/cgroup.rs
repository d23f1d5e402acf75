//! cgroups: which container a cgroup directory belongs to (pure name
//! parsing), and cgroup v2 id → directory lookups on this node.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A container as its runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// `containerd`, `cri-o` or `docker`; `None` for cgroupfs-driver layouts
    /// that do not say.
    pub runtime: Option<&'static str>,
    /// 64 hex digits.
    pub id: String,
}

impl ContainerRef {
    /// `runtime://id` as Kubernetes writes `containerID`.
    pub fn uri(&self) -> String {
        match self.runtime {
            Some(r) => format!("{r}://{}", self.id),
            None => self.id.clone(),
        }
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The container a cgroup directory name denotes, if any: systemd-driver
/// scopes (`cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope`) or a cgroupfs-driver bare `<id>`.
pub fn container_from_cgroup_name(name: &str) -> Option<ContainerRef> {
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ] {
        if let Some(id) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
        {
            return is_container_id(id).then(|| ContainerRef {
                runtime: Some(runtime),
                id: id.to_string(),
            });
        }
    }
    is_container_id(name).then(|| ContainerRef {
        runtime: None,
        id: name.to_string(),
    })
}

/// The innermost container named along a cgroup path.
pub fn container_from_cgroup_path(path: &Path) -> Option<ContainerRef> {
    path.iter()
        .rev()
        .filter_map(|c| c.to_str())
        .find_map(container_from_cgroup_name)
}

/// The Kubernetes pod uid named along a cgroup path: systemd-driver
/// `kubepods-<qos>-pod<uid with _>.slice` or cgroupfs-driver `pod<uid>`;
/// the uid with dashes, as the API server writes it.
pub fn pod_uid_from_cgroup_path(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|c| {
        let rest = c.strip_suffix(".slice").unwrap_or(c);
        let uid = rest
            .rsplit_once("-pod")
            .map_or_else(|| rest.strip_prefix("pod"), |(_, u)| Some(u))?;
        let uid = uid.replace('_', "-");
        let ok = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        ok.then_some(uid)
    })
}

/// How a node mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 only: a process's v2 cgroup is where it runs.
    Unified,
    /// v1 controllers with a v2 hierarchy beside them (systemd "hybrid"):
    /// containers may sit in v1 cgroups only, the v2 one saying nothing.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

/// The cgroup mode of a mountinfo text.
pub fn cgroup_mode(mountinfo: &str) -> CgroupMode {
    let (mut v1, mut v2) = (false, false);
    for line in mountinfo.lines() {
        let fstype = line
            .split_once(" - ")
            .and_then(|(_, post)| post.split_whitespace().next());
        match fstype {
            Some("cgroup2") => v2 = true,
            Some("cgroup") => v1 = true,
            _ => {}
        }
    }
    match (v1, v2) {
        (false, _) => CgroupMode::Unified,
        (true, true) => CgroupMode::Hybrid,
        (true, false) => CgroupMode::Legacy,
    }
}

/// The cgroup v1 paths of a `/proc/<pid>/cgroup` text (the v2 line
/// `0::path` left out).
pub fn v1_cgroup_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, _controllers, path) = (it.next()?, it.next()?, it.next()?);
            (id != "0").then(|| PathBuf::from(path))
        })
        .collect()
}

/// The cgroup v1 paths of a process (empty when it is gone or on a
/// cgroup v2 node).
pub fn process_v1_cgroups(proc_root: &Path, tgid: u32) -> Vec<PathBuf> {
    std::fs::read_to_string(proc_root.join(tgid.to_string()).join("cgroup"))
        .map(|t| v1_cgroup_paths(&t))
        .unwrap_or_default()
}

/// The mount point of the cgroup v2 hierarchy in a mountinfo text.
pub fn cgroup2_mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(pre.split_whitespace().nth(4)?))
    })
}

/// Most cgroup directories indexed (a node with 5,000 pods has ~20,000).
pub const MAX_INDEXED: usize = 200_000;

/// cgroup v2 id → directory, by walking the hierarchy (the id of a cgroup
/// is the inode number of its directory). Rescanned on a miss, at most
/// once per `min_rescan`.
#[derive(Debug)]
pub struct CgroupIndex {
    root: Option<PathBuf>,
    mode: CgroupMode,
    by_id: HashMap<u64, PathBuf>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl CgroupIndex {
    /// An index over this node's cgroup v2 mount (found in /proc/self/mountinfo).
    pub fn for_this_node() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut idx = Self::new(cgroup2_mount_point(&mountinfo));
        idx.mode = cgroup_mode(&mountinfo);
        idx
    }

    /// An index over a given cgroup v2 root.
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            mode: CgroupMode::Unified,
            by_id: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(500),
        }
    }

    /// The index with a given mode (tests of other nodes' layouts).
    pub fn with_mode(mut self, mode: CgroupMode) -> Self {
        self.mode = mode;
        self
    }

    /// The node's cgroup mode.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Number of cgroup directories indexed (bounded by [`MAX_INDEXED`]).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The cgroup v2 mount point used.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.by_id.clear();
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if self.by_id.len() >= MAX_INDEXED {
                tracing::warn!(
                    "cgroup index: more than {MAX_INDEXED} cgroups under {}: the rest is not indexed",
                    root.display()
                );
                break;
            }
            if let Ok(md) = std::fs::metadata(&dir) {
                self.by_id.insert(md.ino(), dir.clone());
            }
            if depth >= 16 {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }

    /// The directory of a cgroup id.
    pub fn lookup(&mut self, id: u64) -> Option<PathBuf> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        let stale = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan);
        if stale {
            self.scan();
        }
        self.by_id.get(&id).cloned()
    }

    /// The container of a cgroup id, if the cgroup is a container's.
    pub fn container(&mut self, id: u64) -> Option<ContainerRef> {
        container_from_cgroup_path(&self.lookup(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";

    #[test]
    fn runtime_scopes_and_bare_ids() {
        let c =
            container_from_cgroup_name(&format!("cri-containerd-{ID}.scope")).expect("containerd");
        assert_eq!(c.uri(), format!("containerd://{ID}"));
        let c = container_from_cgroup_name(&format!("crio-{ID}.scope")).expect("crio");
        assert_eq!(c.uri(), format!("cri-o://{ID}"));
        let c = container_from_cgroup_name(&format!("docker-{ID}.scope")).expect("docker");
        assert_eq!(c.uri(), format!("docker://{ID}"));
        let c = container_from_cgroup_name(ID).expect("cgroupfs");
        assert_eq!((c.runtime, c.id.as_str()), (None, ID));
        assert_eq!(container_from_cgroup_name("crio-conmon-abc.scope"), None);
        assert_eq!(container_from_cgroup_name("system.slice"), None);
        assert_eq!(
            container_from_cgroup_name(&format!("cri-containerd-{}.scope", &ID[1..])),
            None
        );
    }

    #[test]
    fn paths_name_the_innermost_container() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            container_from_cgroup_path(Path::new(&systemd)).map(|c| c.id),
            Some(ID.to_string())
        );
        let cgroupfs = format!("/kubepods/burstable/pod5a3f2b1c-1111-2222-3333-444455556666/{ID}");
        assert_eq!(
            container_from_cgroup_path(Path::new(&cgroupfs)).map(|c| c.id),
            Some(ID.to_string())
        );
        assert_eq!(
            container_from_cgroup_path(Path::new("/user.slice/session-1.scope")),
            None
        );
    }

    #[test]
    fn pod_uids_of_both_drivers() {
        let uid = "5a3f2b1c-1111-2222-3333-444455556666";
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope", uid.replace('-', "_")),
            format!("/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope", uid.replace('-', "_")),
            format!("/kubepods/besteffort/pod{uid}/{ID}"),
            format!("/kubepods/pod{uid}"),
        ] {
            assert_eq!(pod_uid_from_cgroup_path(&path).as_deref(), Some(uid), "{path}");
        }
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/kubepods/podnotauid/x",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(pod_uid_from_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn modes_and_v1_paths() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n\
                      37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup_mode(hybrid), CgroupMode::Hybrid);
        assert_eq!(
            cgroup_mode("37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            CgroupMode::Legacy
        );
        assert_eq!(
            cgroup_mode("36 25 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            CgroupMode::Unified
        );
        let proc = format!("9:name=systemd:/\n4:memory:/kubepods/besteffort/podx/{ID}\n0::/\n");
        assert_eq!(
            v1_cgroup_paths(&proc),
            [
                PathBuf::from("/"),
                PathBuf::from(format!("/kubepods/besteffort/podx/{ID}"))
            ]
        );
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("42")).expect("mkdir");
        std::fs::write(d.path().join("42/cgroup"), &proc).expect("write");
        assert_eq!(process_v1_cgroups(d.path(), 42).len(), 2);
        assert!(process_v1_cgroups(d.path(), 43).is_empty(), "gone: nothing");
    }

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mi = "35 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  36 35 0:31 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n\
                  37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount_point(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_point("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn index_maps_directory_inodes() {
        let d = tempfile::tempdir().expect("tmp");
        let leaf = d.path().join(format!("a/cri-containerd-{ID}.scope"));
        std::fs::create_dir_all(&leaf).expect("mkdir");
        let ino = std::fs::metadata(&leaf).expect("stat").ino();
        let mut idx = CgroupIndex::new(Some(d.path().to_path_buf()));
        assert_eq!(idx.lookup(ino), Some(leaf));
        assert_eq!(idx.container(ino).map(|c| c.id), Some(ID.to_string()));
    }
}
