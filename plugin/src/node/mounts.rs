//! Which mount a file is on, from `/proc/<pid>/mountinfo`: an overlay's
//! layers (the backing file of an overlay file is trapped too), and whether
//! a pod's file is on the pod's own filesystems or on a node-shared mount.
//! Parsing and deciding are pure; reading the file and
//! `statx(STATX_MNT_ID)` are the edges.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};

use super::pod_own::NodeMounts;
use super::resolve::{io_err, PinnedFile, ResolveError, Root};
use crate::sync::lock;

/// An overlay mount and its layers.
#[derive(Debug)]
pub struct Overlay {
    mount: MountInfo,
    layers: OverlayLayers,
}

/// One line of mountinfo (the fields kive uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id (`statx`'s `stx_mnt_id`).
    pub id: u64,
    /// Device as `major:minor`.
    pub dev: String,
    /// The directory of the filesystem mounted here (`/` for a whole fs;
    /// a bind mount's source directory otherwise).
    pub root: String,
    /// Where it is mounted, as the reading process sees it.
    pub mount_point: String,
    /// Filesystem type (`overlay`, `ext4`, ...).
    pub fs_type: String,
    /// Super block options (`lowerdir=...,upperdir=...` for an overlay).
    pub super_options: String,
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011`, `\012`, `\134`).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed one.
pub fn parse_line(line: &str) -> Option<MountInfo> {
    let (head, tail) = line.split_once(" - ")?;
    let mut h = head.split(' ');
    let id = h.next()?.parse().ok()?;
    let _parent = h.next()?;
    let dev = h.next()?.to_string();
    let root = unescape(h.next()?);
    let mount_point = unescape(h.next()?);
    let mut t = tail.split(' ');
    let fs_type = t.next()?.to_string();
    let _source = t.next()?;
    let super_options = t.next().unwrap_or_default().to_string();
    Some(MountInfo {
        id,
        dev,
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

/// The mount with id `id` in a mountinfo text.
pub fn find(text: &str, id: u64) -> Option<MountInfo> {
    text.lines().filter_map(parse_line).find(|m| m.id == id)
}

/// An overlay's layers, as host paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayLayers {
    /// The writable layer (copied-up and created files), if any.
    pub upper: Option<String>,
    /// The read-only layers, topmost first.
    pub lowers: Vec<String>,
}

/// An overlay's layers from its super options. Relative layer paths
/// (containerd shortens long option strings that way, relative to its own
/// working directory) cannot be found again: `None` for those.
pub fn overlay_layers(super_options: &str) -> Option<OverlayLayers> {
    let mut layers = OverlayLayers::default();
    for opt in split_unescaped(super_options, ',') {
        if let Some(v) = opt.strip_prefix("upperdir=") {
            layers.upper = Some(unescape(v));
        } else if let Some(v) = opt.strip_prefix("lowerdir=") {
            layers.lowers = split_unescaped(v, ':')
                .into_iter()
                .map(|l| unescape(&l.replace("\\:", ":").replace("\\,", ",")))
                .collect();
        }
    }
    let all_absolute = layers
        .upper
        .iter()
        .chain(&layers.lowers)
        .all(|p| p.starts_with('/'));
    (!layers.lowers.is_empty() && all_absolute).then_some(layers)
}

/// Splits at `sep` not preceded by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        if c == sep && prev != '\\' {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        prev = c;
    }
    out.push(&s[start..]);
    out
}

/// `path` (absolute, inside the process's root) relative to a mount, as a
/// path inside the mounted filesystem; `None` if it is not under the mount
/// point.
pub fn path_in_mount(m: &MountInfo, path: &str) -> Option<String> {
    let point = m.mount_point.trim_end_matches('/');
    let rest = path.strip_prefix(point)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let root = m.root.trim_end_matches('/');
    Some(format!("{root}{rest}"))
}

/// `statfs`'s `f_type` of an overlay filesystem (`OVERLAYFS_SUPER_MAGIC`).
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// Whether an open file is on an overlay filesystem (its `statfs`; `true`
/// when that cannot be told, so that the mountinfo decides).
// `f_type` is `i64` here, a narrower integer on some other targets
#[allow(clippy::useless_conversion)]
fn on_overlay(fd: impl AsFd) -> bool {
    rustix::fs::fstatfs(fd).map_or(true, |st| i64::from(st.f_type) == OVERLAYFS_MAGIC)
}

/// The mount id of an open file.
pub fn mount_id(fd: impl AsFd) -> std::io::Result<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).map_err(io_err)?;
    Ok(st.stx_mnt_id)
}

impl Root {
    /// The file backing `pinned` (found at `path` in this root) when it is
    /// seen through an overlay: the upper layer's copy if there is one,
    /// else the topmost lower layer's, resolved in `host` (the layers are
    /// host paths). `None` when the file is not on an overlay, the root
    /// has no mountinfo, or the layer cannot be found.
    pub fn backing(&self, pinned: &PinnedFile, path: &str, host: &Root) -> Option<PinnedFile> {
        let proc_dir = self.proc_dir.as_ref()?;
        let id = match pinned.mnt_id() {
            Some(id) => id,
            None => mount_id(&pinned.pin).ok()?,
        };
        let cached = lock(&self.overlays).get(&id).cloned();
        let overlay = match cached {
            Some(o) => o,
            None => {
                // a file on another filesystem has no layer behind it: the
                // mountinfo (and the process's identity check before it,
                // once per root) is read only for an overlay's mounts; both
                // outside the cache's lock, so that a filesystem never
                // answering `statfs` (a container's FUSE) holds this entry
                // only, not the container's others
                let o = if on_overlay(&pinned.pin) {
                    let text = read_mountinfo(proc_dir.open().ok()?).ok()?;
                    find(&text, id)
                        .filter(|m| m.fs_type == "overlay")
                        .and_then(|mount| {
                            let layers = overlay_layers(&mount.super_options)?;
                            Some(Arc::new(Overlay { mount, layers }))
                        })
                } else {
                    None
                };
                let mut cache = lock(&self.overlays);
                if cache.len() > 64 {
                    cache.clear();
                }
                cache.insert(id, o.clone());
                o
            }
        }?;
        let rel = path_in_mount(&overlay.mount, path)?;
        let layers = &overlay.layers;
        layers
            .upper
            .iter()
            .chain(&layers.lowers)
            .find_map(|dir| {
                host.resolve(&format!("{}{rel}", dir.trim_end_matches('/')))
                    .ok()
            })
            .filter(|b| b.key != pinned.key)
    }

    /// Whether `path` in this root (the file, or with `parent` its
    /// directory) is on the pod's own filesystems ([`super::pod_own::is_pod_own`]); the
    /// node's mounts are `node`'s (the node's init's mount table). An error
    /// when either mountinfo cannot be read: the caller keeps the trap
    /// pending rather than guess.
    pub fn on_pod_mount(
        &self,
        path: &str,
        parent: bool,
        node: &NodeMounts,
        pod_uid: &str,
    ) -> Result<bool, ResolveError> {
        let target = if parent {
            match path.trim_end_matches('/').rsplit_once('/') {
                Some(("", _)) | None => "/",
                Some((p, _)) => p,
            }
        } else {
            path
        };
        let fail = |op, source| ResolveError::Io {
            op,
            path: path.to_string(),
            root: self.path().to_path_buf(),
            source,
        };
        let fd = rustix::fs::openat2(
            self.fd(),
            target,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| fail("resolving the mount of", io_err(e)))?;
        self.fd_on_pod_mount(&fd, node, pod_uid)
            .map_err(|e| fail("reading the mounts of", e))
    }

    /// [`Root::on_pod_mount`] for a file already resolved.
    pub fn pinned_on_pod_mount(
        &self,
        pinned: &PinnedFile,
        path: &str,
        node: &NodeMounts,
        pod_uid: &str,
    ) -> Result<bool, ResolveError> {
        self.fd_on_pod_mount(&pinned.pin, node, pod_uid)
            .map_err(|source| ResolveError::Io {
                op: "reading the mounts of",
                path: path.to_string(),
                root: self.path().to_path_buf(),
                source,
            })
    }

    fn fd_on_pod_mount(
        &self,
        fd: &OwnedFd,
        node: &NodeMounts,
        pod_uid: &str,
    ) -> std::io::Result<bool> {
        let no_mounts = || std::io::Error::other("no /proc directory to read mountinfo from");
        let id = mount_id(fd)?;
        let own = read_mountinfo(self.proc_dir.as_ref().ok_or_else(no_mounts)?.open()?)?;
        let m = find(&own, id)
            .ok_or_else(|| std::io::Error::other(format!("mount {id} not in mountinfo")))?;
        node.is_pod_own(&m, pod_uid)
    }
}

/// Reads `mountinfo` under a `/proc/<pid>` directory fd.
pub fn read_mountinfo(proc_dir: impl AsFd) -> std::io::Result<String> {
    // a container's is a few dozen lines of ≈ 150 bytes (grown if longer)
    super::procread::read_at(proc_dir, "mountinfo", 16 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAY: &str = "1021 980 0:91 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/containerd/snap/3/fs:/var/lib/containerd/snap/2/fs,upperdir=/var/lib/containerd/snap/4/fs,workdir=/var/lib/containerd/snap/4/work";

    #[test]
    fn the_statfs_shortcut_agrees_with_mountinfo() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Root::open(dir.path()).expect("root");
        std::fs::write(dir.path().join("f"), "x").expect("write");
        let pinned = root.resolve("/f").expect("resolves");
        let id = mount_id(&pinned.pin).expect("mount id");
        let own = rustix::fs::open("/proc/self", OFlags::PATH, Mode::empty()).expect("proc");
        let text = read_mountinfo(&own).expect("mountinfo");
        let mount = find(&text, id).expect("the file's mount is listed");
        assert_eq!(
            on_overlay(&pinned.pin),
            mount.fs_type == "overlay",
            "statfs and mountinfo disagree on {mount:?}"
        );
        // the mount's answer is remembered: one look per root and mount
        let root = root.with_own_mounts(std::path::Path::new("/proc"));
        let host = Root::open("/").expect("host root");
        let _ = root.backing(&pinned, "/f", &host);
        assert_eq!(root.overlays.lock().expect("cache").len(), 1);
    }

    #[test]
    fn an_overlay_line_gives_its_layers_topmost_first() {
        let m = parse_line(OVERLAY).expect("parses");
        assert_eq!((m.id, m.fs_type.as_str()), (1021, "overlay"));
        assert_eq!(m.mount_point, "/");
        let l = overlay_layers(&m.super_options).expect("layers");
        assert_eq!(l.upper.as_deref(), Some("/var/lib/containerd/snap/4/fs"));
        assert_eq!(
            l.lowers,
            [
                "/var/lib/containerd/snap/3/fs",
                "/var/lib/containerd/snap/2/fs"
            ]
        );
    }

    #[test]
    fn escapes_in_paths_are_undone() {
        let line = r"7 1 0:9 / /mnt/with\040space rw - overlay none rw,lowerdir=/l\:1:/l2,upperdir=/u\054x";
        let m = parse_line(line).expect("parses");
        assert_eq!(m.mount_point, "/mnt/with space");
        let l = overlay_layers(&m.super_options).expect("layers");
        assert_eq!(l.lowers, ["/l:1", "/l2"]);
        assert_eq!(l.upper.as_deref(), Some("/u,x"));
    }

    #[test]
    fn relative_or_missing_layers_are_not_guessed() {
        assert_eq!(overlay_layers("rw,lowerdir=12/fs:11/fs,upperdir=/u"), None);
        assert_eq!(overlay_layers("rw,upperdir=/u"), None);
        assert_eq!(
            overlay_layers("ro,lowerdir=/a:/b"),
            Some(OverlayLayers {
                upper: None,
                lowers: vec!["/a".into(), "/b".into()]
            })
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("x 1 0:1 / / rw - ext4 /dev/sda1 rw"), None);
        let text = format!("junk\n{OVERLAY}\n");
        assert_eq!(find(&text, 1021).map(|m| m.id), Some(1021));
        assert_eq!(find(&text, 5), None);
    }

    #[test]
    fn paths_are_taken_relative_to_the_mount() {
        let m = parse_line(OVERLAY).expect("parses");
        assert_eq!(path_in_mount(&m, "/etc/x").as_deref(), Some("/etc/x"));
        let bind =
            parse_line("5 1 8:1 /srv/data /mnt/data rw - ext4 /dev/sda1 rw").expect("parses");
        assert_eq!(
            path_in_mount(&bind, "/mnt/data/f").as_deref(),
            Some("/srv/data/f")
        );
        assert_eq!(path_in_mount(&bind, "/mnt/database/f"), None);
        assert_eq!(path_in_mount(&bind, "/etc/f"), None);
    }
}
