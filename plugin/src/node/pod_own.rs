//! Whether a pod's file is on the pod's own filesystems or on a
//! node-shared mount, decided against the node's mount table: the pure
//! decision ([`is_pod_own`]) and the node's table read from its init and
//! kept a moment ([`NodeMounts`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mounts::{parse_line, read_mountinfo, MountInfo};
use super::procref::ProcDir;
use crate::sync::lock;

/// The kubelet's per-pod directories (`<dir>/<pod uid>/volumes/...`).
pub const KUBELET_PODS_DIR: &str = "/var/lib/kubelet/pods";

/// How long a read of the node's table answers (a node's table is
/// hundreds of kilobytes with a hundred pods; arming reads it per entry).
/// A mount found in no line of it is looked up again in a fresh read.
const TABLE_FOR: Duration = Duration::from_secs(1);

/// Whether the mount a pod's file is on (`m`, from the container's
/// mountinfo) belongs to the pod: the container's root overlay, a mount that
/// exists only inside the container (a virtual filesystem, device major 0,
/// in no line of the node's table), or one whose host location (found in
/// the node's mountinfo `host` by device and root) is under the kubelet's
/// directory of this pod (`<pods_dir>/<pod_uid>/`: emptyDir, secrets,
/// configMaps, projected volumes). Anything else (a hostPath, a node disk,
/// another pod's volume) is node-shared.
pub fn is_pod_own(m: &MountInfo, host: &[MountInfo], pods_dir: &str, pod_uid: &str) -> bool {
    pod_own_in(m, host, pods_dir, pod_uid).unwrap_or_else(|| m.dev.starts_with("0:"))
}

/// [`is_pod_own`], `None` when no line of `host` holds `m`'s directory.
fn pod_own_in(m: &MountInfo, host: &[MountInfo], pods_dir: &str, pod_uid: &str) -> Option<bool> {
    if m.fs_type == "overlay" && m.mount_point == "/" {
        return Some(true);
    }
    let pods_dir = pods_dir.trim_end_matches('/');
    let mut candidates = host
        .iter()
        .filter(|h| h.dev == m.dev && !subpath_alias(h, pods_dir))
        .filter_map(|h| host_path(h, &m.root))
        .peekable();
    candidates.peek()?;
    let own = format!("{pods_dir}/{pod_uid}/");
    Some(
        !pod_uid.is_empty()
            && !pod_uid.contains('/')
            && candidates.any(|p| format!("{p}/").starts_with(&own)),
    )
}

/// The kubelet's bind of a volume's `subPath` for a container
/// (`<pods_dir>/<uid>/volume-subpaths/<volume>/<container>/<n>`): it sits
/// under the pod's directory whatever its source is (a hostPath's, another
/// pod's volume), so it never tells where the source is; the source's own
/// mounts do.
fn subpath_alias(h: &MountInfo, pods_dir: &str) -> bool {
    h.mount_point
        .strip_prefix(pods_dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').nth(1))
        == Some("volume-subpaths")
}

/// Where the directory `root` of a filesystem is on the host, through the
/// host mount `h` of that filesystem (`None` if `h` does not contain it).
fn host_path(h: &MountInfo, root: &str) -> Option<String> {
    let base = h.root.trim_end_matches('/');
    let rest = root.strip_prefix(base)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(format!("{}{rest}", h.mount_point.trim_end_matches('/')))
}

/// The node's mount table: its init's `mountinfo`
/// ([`super::host::node_init`]), read again after `TABLE_FOR` (1 s), or when a
/// mount is in no line of the last read.
pub struct NodeMounts {
    init: ProcDir,
    last: Mutex<Option<(Instant, Arc<Vec<MountInfo>>)>>,
}

impl NodeMounts {
    /// The table of the process `init` (the node's init).
    pub fn new(init: ProcDir) -> Self {
        Self {
            init,
            last: Mutex::new(None),
        }
    }

    fn table(&self, fresh: bool) -> std::io::Result<Arc<Vec<MountInfo>>> {
        if !fresh {
            if let Some((at, t)) = lock(&self.last).as_ref() {
                if at.elapsed() < TABLE_FOR {
                    return Ok(Arc::clone(t));
                }
            }
        }
        let text = read_mountinfo(self.init.open()?)?;
        let t = Arc::new(text.lines().filter_map(parse_line).collect::<Vec<_>>());
        *lock(&self.last) = Some((Instant::now(), Arc::clone(&t)));
        Ok(t)
    }

    /// [`is_pod_own`] against the node's table (read again when `m` is in
    /// no line of the last read: a mount made since).
    pub fn is_pod_own(&self, m: &MountInfo, pod_uid: &str) -> std::io::Result<bool> {
        if let Some(own) = pod_own_in(m, &self.table(false)?, KUBELET_PODS_DIR, pod_uid) {
            return Ok(own);
        }
        Ok(is_pod_own(m, &self.table(true)?, KUBELET_PODS_DIR, pod_uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dev: &str, root: &str, point: &str, fs: &str) -> MountInfo {
        MountInfo {
            id: 1,
            dev: dev.into(),
            root: root.into(),
            mount_point: point.into(),
            fs_type: fs.into(),
            super_options: String::new(),
        }
    }

    const PODS: &str = "/var/lib/kubelet/pods";

    fn node() -> Vec<MountInfo> {
        vec![
            mount("254:0", "/", "/", "ext4"),
            mount(
                "0:55",
                "/",
                "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~secret/token",
                "tmpfs",
            ),
            mount("0:60", "/", "/run", "tmpfs"),
            // the kubelet's subPath binds of pod uid-1: a hostPath's
            // directory and the node's /run
            mount(
                "254:0",
                "/etc/ssh",
                "/var/lib/kubelet/pods/uid-1/volume-subpaths/etc/app/0",
                "ext4",
            ),
            mount(
                "0:60",
                "/secrets",
                "/var/lib/kubelet/pods/uid-1/volume-subpaths/run/app/1",
                "tmpfs",
            ),
        ]
    }

    #[test]
    fn the_container_root_and_its_own_volumes_are_the_pods() {
        let root = mount("0:91", "/", "/", "overlay");
        assert!(is_pod_own(&root, &node(), PODS, "uid-1"));
        let empty_dir = mount(
            "254:0",
            "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/cache",
            "/cache",
            "ext4",
        );
        assert!(is_pod_own(&empty_dir, &node(), PODS, "uid-1"));
        let sub = mount(
            "254:0",
            "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/cache/sub",
            "/sub",
            "ext4",
        );
        assert!(
            is_pod_own(&sub, &node(), PODS, "uid-1"),
            "a subPath of its own emptyDir"
        );
        let secret = mount("0:55", "/", "/var/run/secrets/token", "tmpfs");
        assert!(is_pod_own(&secret, &node(), PODS, "uid-1"));
        let shm = mount("0:70", "/", "/dev/shm", "tmpfs");
        assert!(
            is_pod_own(&shm, &node(), PODS, "uid-1"),
            "only in the container"
        );
    }

    #[test]
    fn host_paths_and_other_pods_volumes_are_node_shared() {
        let host_etc = mount("254:0", "/etc", "/host-etc", "ext4");
        assert!(!is_pod_own(&host_etc, &node(), PODS, "uid-1"));
        let host_root = mount("254:0", "/", "/host", "ext4");
        assert!(!is_pod_own(&host_root, &node(), PODS, "uid-1"));
        let run = mount("0:60", "/", "/host-run", "tmpfs");
        assert!(!is_pod_own(&run, &node(), PODS, "uid-1"), "the node's /run");
        let other = mount("0:55", "/", "/token", "tmpfs");
        assert!(
            !is_pod_own(&other, &node(), PODS, "uid-2"),
            "another pod's secret"
        );
        let sibling = mount(
            "254:0",
            "/var/lib/kubelet/pods/uid-10/volumes/x",
            "/x",
            "ext4",
        );
        assert!(
            !is_pod_own(&sibling, &node(), PODS, "uid-1"),
            "uid-10 is not uid-1"
        );
        let disk = mount("8:16", "/", "/data", "xfs");
        assert!(
            !is_pod_own(&disk, &node(), PODS, "uid-1"),
            "a device not on the node's table"
        );
        assert!(!is_pod_own(&host_etc, &node(), PODS, ""), "no pod uid");
    }

    #[test]
    fn a_subpath_of_a_host_path_is_node_shared_though_the_kubelet_binds_it_under_the_pod() {
        let ssh = mount("254:0", "/etc/ssh", "/ssh", "ext4");
        assert!(
            !is_pod_own(&ssh, &node(), PODS, "uid-1"),
            "hostPath /etc with subPath ssh"
        );
        let run = mount("0:60", "/secrets", "/run-secrets", "tmpfs");
        assert!(
            !is_pod_own(&run, &node(), PODS, "uid-1"),
            "the node's /run with a subPath"
        );
        assert!(subpath_alias(&node()[3], PODS));
        assert!(!subpath_alias(&node()[1], PODS), "a volume itself");
    }

    #[test]
    fn the_node_s_table_is_read_and_kept_a_moment() {
        let dir = rustix::fs::open(
            "/proc/self",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .expect("/proc/self");
        let node = NodeMounts::new(ProcDir::from(dir));
        let first = node.table(false).expect("this process's table");
        assert!(
            first.iter().any(|m| m.mount_point == "/"),
            "the table has its root: {first:?}"
        );
        let again = node.table(false).expect("kept");
        assert!(Arc::ptr_eq(&first, &again), "read once within TABLE_FOR");
        let fresh = node.table(true).expect("read again");
        assert!(!Arc::ptr_eq(&first, &fresh), "a fresh read when asked");
        // a mount in no line of the table: decided on a fresh read
        let absent = mount("0:9999", "/", "/nowhere", "tmpfs");
        assert!(node.is_pod_own(&absent, "uid-1").expect("decided"));
    }
}
