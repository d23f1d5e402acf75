//! Finding a process of each container on this node: a container's cgroup
//! directory (kubelet's layouts, else one walk of the cgroup tree) lists
//! its processes in `cgroup.procs`; without cgroup v2, every process's
//! cgroup path names its container (see [`super::cgroup`]).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::cgroup::{container_from_cgroup_name, container_from_cgroup_path};
use super::procref::ProcDir;
use super::resolve::{io_err, ResolveError, Root};
use crate::sync::lock;

/// The root directory of process `pid`, checked to belong to container
/// `container_id` (64 hex) *after* the root is open: `/proc/<pid>` is
/// opened once and both `root` and `cgroup` are read through that
/// directory fd, which stays tied to the process it was opened for. A pid
/// that exited and was reused by another process (the host's, say) since
/// the scan fails the check, so a trap is never resolved in the wrong root.
/// The root keeps one fd (its directory); the process is then named by pid
/// and start time ([`super::procref`]) for its mountinfo and its exit.
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
    // one line on cgroup v2 (a few on v1)
    let text = super::procread::read_at(&dir, "cgroup", 1024).map_err(fail)?;
    match container_of_cgroup_file(&text) {
        // the process is named (pid, start time), not held: one fd per root
        Some(id) if id == container_id => {
            let named = ProcDir::named(&dir, dir_path.clone()).map_err(fail)?;
            Ok(Root::from_fd(root, root_path).with_proc_dir(named))
        }
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

/// Finds a container's processes through its cgroup: the cost of a lookup
/// is a few `stat`s and one `cgroup.procs` read, not a `/proc` scan.
///
/// In order: the directory found before; kubelet's layouts for the pod's
/// uid (systemd and cgroupfs drivers, every QoS class, containerd, CRI-O
/// and docker names), the layout that matched last tried first (a node's
/// containers share a driver and a runtime: one `stat` per container, not
/// up to fifteen); one walk of the cgroup tree indexing every container
/// directory (at most once per `min_walk`); without a cgroup v2 root, a
/// `/proc` scan.
///
/// Shared by threads (`&self`): lookups of different containers run side
/// by side, the filesystem work outside its locks (only a walk holds one,
/// so that two walks never run at once).
#[derive(Debug)]
pub struct ContainerLocator {
    cgroup_root: Option<PathBuf>,
    proc_root: PathBuf,
    dirs: Mutex<HashMap<String, PathBuf>>,
    /// When the tree was last walked (held during a walk).
    last_walk: Mutex<Option<Instant>>,
    min_walk: Duration,
    /// The index in [`kubelet_dirs`] of the layout that matched last.
    hint: AtomicUsize,
}

impl ContainerLocator {
    /// A locator over a cgroup v2 root (`None`: scan `proc_root`).
    pub fn new(cgroup_root: Option<PathBuf>, proc_root: PathBuf) -> Self {
        Self {
            cgroup_root,
            proc_root,
            dirs: Mutex::default(),
            last_walk: Mutex::default(),
            min_walk: Duration::from_secs(1),
            hint: AtomicUsize::new(0),
        }
    }

    /// A pid of container `id` (64 hex) of the pod with uid `pod_uid`.
    pub fn pid_of(&self, id: &str, pod_uid: &str) -> Option<u32> {
        let Some(root) = &self.cgroup_root else {
            return ContainerPids::scan(&self.proc_root).pid_of(id);
        };
        let known = lock(&self.dirs).get(id).cloned();
        if let Some(pid) = known.and_then(|d| first_pid(&d)) {
            return Some(pid);
        }
        let layouts = kubelet_dirs(root, pod_uid, id);
        let hint = self.hint.load(Ordering::Relaxed);
        let found = std::iter::once(hint)
            .chain((0..layouts.len()).filter(|&i| i != hint))
            .filter_map(|i| layouts.get(i).map(|d| (i, d)))
            .find(|(_, d)| d.is_dir());
        let found = match found {
            Some((i, dir)) => {
                self.hint.store(i, Ordering::Relaxed);
                dir.clone()
            }
            None => {
                let mut last = lock(&self.last_walk);
                if last.is_none_or(|t| t.elapsed() >= self.min_walk) {
                    *last = Some(Instant::now());
                    let walked = walk(root);
                    lock(&self.dirs).extend(walked);
                }
                drop(last);
                lock(&self.dirs).get(id).cloned()?
            }
        };
        let pid = first_pid(&found);
        lock(&self.dirs).insert(id.to_string(), found);
        pid
    }

    /// Forgets a container (it stopped or was replaced).
    pub fn forget(&self, id: &str) {
        lock(&self.dirs).remove(id);
    }

    /// Directories known.
    pub fn len(&self) -> usize {
        lock(&self.dirs).len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        lock(&self.dirs).is_empty()
    }
}

/// Every container directory under `root` (a container's own sub-cgroups
/// are not containers), by container id.
fn walk(root: &Path) -> HashMap<String, PathBuf> {
    let mut dirs = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let path = entry.path();
            match name.to_str().and_then(container_from_cgroup_name) {
                Some(c) => {
                    dirs.insert(c.id, path);
                }
                None if depth < 8 => stack.push((path, depth + 1)),
                None => {}
            }
        }
    }
    dirs
}

/// Where kubelet puts a container's cgroup: systemd driver
/// (`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<runtime>-<id>.scope`)
/// and cgroupfs driver (`kubepods/<qos>/pod<uid>/<id>`), guaranteed pods
/// without the QoS level.
pub fn kubelet_dirs(root: &Path, pod_uid: &str, id: &str) -> Vec<PathBuf> {
    let uid_ = pod_uid.replace('-', "_");
    let mut out = Vec::new();
    for qos in ["", "burstable", "besteffort"] {
        let (slice, pod) = if qos.is_empty() {
            (
                root.join("kubepods.slice"),
                format!("kubepods-pod{uid_}.slice"),
            )
        } else {
            (
                root.join("kubepods.slice")
                    .join(format!("kubepods-{qos}.slice")),
                format!("kubepods-{qos}-pod{uid_}.slice"),
            )
        };
        for scope in ["cri-containerd-", "crio-", "docker-"] {
            out.push(slice.join(&pod).join(format!("{scope}{id}.scope")));
        }
        let fs = if qos.is_empty() {
            root.join("kubepods")
        } else {
            root.join("kubepods").join(qos)
        };
        out.push(fs.join(format!("pod{pod_uid}")).join(id));
    }
    out
}

/// The lowest pid listed in a cgroup's `cgroup.procs`.
fn first_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .ok()?
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .min()
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
        // its start time names the process once the root is open
        let stat = format!("{pid} (sleep) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n");
        std::fs::write(d.join("stat"), stat).expect("stat");
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
    fn kubelet_layouts_name_the_pod_and_the_container() {
        let dirs = kubelet_dirs(Path::new("/cg"), "a-b", ID);
        assert!(dirs.contains(&PathBuf::from(format!(
            "/cg/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice/cri-containerd-{ID}.scope"
        ))));
        assert!(dirs.contains(&PathBuf::from(format!(
            "/cg/kubepods.slice/kubepods-poda_b.slice/crio-{ID}.scope"
        ))));
        assert!(dirs.contains(&PathBuf::from(format!(
            "/cg/kubepods/besteffort/poda-b/{ID}"
        ))));
    }

    #[test]
    fn the_locator_reads_cgroup_procs_through_a_layout_or_a_walk() {
        let cg = tempfile::tempdir().expect("tmp");
        let proc_root = tempfile::tempdir().expect("tmp");
        // kubelet's systemd layout
        let dir = cg
            .path()
            .join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice")
            .join(format!("cri-containerd-{ID}.scope"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("cgroup.procs"), "77\n12\n").expect("procs");
        // anywhere else: found by the walk
        let other = ID.replace('0', "e");
        let odd = cg
            .path()
            .join("elsewhere.slice")
            .join(format!("crio-{other}.scope"));
        std::fs::create_dir_all(odd.join("sub")).expect("mkdir");
        std::fs::write(odd.join("cgroup.procs"), "5\n").expect("procs");
        let l = ContainerLocator::new(Some(cg.path().into()), proc_root.path().into());
        assert_eq!(l.pid_of(ID, "u1"), Some(12), "the lowest pid");
        assert_eq!(l.pid_of(&other, "u2"), Some(5));
        assert_eq!(l.len(), 2);
        // an empty cgroup: no pid
        std::fs::write(odd.join("cgroup.procs"), "").expect("procs");
        assert_eq!(l.pid_of(&other, "u2"), None);
        l.forget(&other);
        assert_eq!(l.pid_of(&ID.replace('0', "d"), "u3"), None, "unknown");
        // without cgroup v2: the /proc scan
        fake_process(proc_root.path(), 9, ID);
        let v1 = ContainerLocator::new(None, proc_root.path().into());
        assert_eq!(v1.pid_of(ID, "u1"), Some(9));
    }

    #[test]
    fn the_layout_that_matched_last_is_tried_first_and_others_still_found() {
        let cg = tempfile::tempdir().expect("tmp");
        let proc_root = tempfile::tempdir().expect("tmp");
        let ids: Vec<String> = (0..6).map(|i| format!("{i:064x}")).collect();
        // containers of several layouts, interleaved: the hint of one never
        // hides another
        let layouts = [
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu{n}.slice/cri-containerd-{id}.scope",
            "kubepods.slice/kubepods-podu{n}.slice/crio-{id}.scope",
            "kubepods/burstable/podu{n}/{id}",
        ];
        for (n, id) in ids.iter().enumerate() {
            let rel = layouts[n % layouts.len()]
                .replace("{n}", &n.to_string())
                .replace("{id}", id);
            let dir = cg.path().join(rel);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("cgroup.procs"), format!("{}\n", 100 + n)).expect("procs");
        }
        let l = ContainerLocator::new(Some(cg.path().into()), proc_root.path().into());
        // found side by side from several threads, each container by its own layout
        std::thread::scope(|s| {
            for (n, id) in ids.iter().enumerate() {
                let l = &l;
                s.spawn(move || {
                    assert_eq!(
                        l.pid_of(id, &format!("u{n}")),
                        Some(100 + n as u32),
                        "container {n}"
                    );
                });
            }
        });
        assert_eq!(l.len(), ids.len());
        // the hint names the last layout that matched: a pod of another one
        // is still found by its own
        for (n, id) in ids.iter().enumerate().rev() {
            l.forget(id);
            assert_eq!(l.pid_of(id, &format!("u{n}")), Some(100 + n as u32));
        }
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
