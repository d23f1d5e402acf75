//! An emulated container, built by the tests themselves: an overlayfs root
//! (lower + upper layer) with the host's /usr bind-mounted read-only, its own
//! mount and pid namespaces (util-linux `unshare`), a cgroup v2 directory
//! named like a containerd container (`cri-containerd-<id>.scope`), and
//! optionally node directories bind-mounted in (hostPath volumes).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running emulated container (its init is `sleep`).
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: u32,
    /// Its cgroup v2 directory.
    pub cgroup: PathBuf,
    /// Layer directories (lower, upper, work, merged) live here.
    pub base: tempfile::TempDir,
    unshare: Child,
}

fn cgroup2_root() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    kive::node::cgroup::cgroup2_mount_point(&mi)
        .expect("a cgroup v2 hierarchy is mounted (DESIGN.md §2: /sys/fs/cgroup/unified)")
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    let f = std::fs::read("/proc/sys/kernel/random/uuid").expect("uuid");
    let g = std::fs::read("/proc/sys/kernel/random/uuid").expect("uuid");
    for (i, b) in f
        .iter()
        .chain(g.iter())
        .filter(|b| b.is_ascii_hexdigit())
        .take(32)
        .enumerate()
    {
        bytes[i] = *b;
    }
    let half = String::from_utf8_lossy(&bytes).to_string();
    format!("{half}{half}")
}

impl Container {
    /// Starts a container whose lower layer holds `files` (path, content)
    /// and `links` (path, target).
    pub fn start(files: &[(&str, &str)], links: &[(&str, &str)]) -> Self {
        Self::start_with(files, links, &[])
    }

    /// [`Container::start`] with node directories bind-mounted into the
    /// container (`(node dir, path inside)`): what a hostPath volume is.
    pub fn start_with(
        files: &[(&str, &str)],
        links: &[(&str, &str)],
        host_paths: &[(&Path, &str)],
    ) -> Self {
        let base = tempfile::tempdir().expect("temp dir");
        let (lower, upper, work, merged) = (
            base.path().join("lower"),
            base.path().join("upper"),
            base.path().join("work"),
            base.path().join("merged"),
        );
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).expect("mkdir layer");
        }
        std::fs::create_dir_all(lower.join("usr")).expect("mkdir usr");
        for (name, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            symlink(target, lower.join(name)).expect("usr symlink");
        }
        for (path, content) in files {
            let p = lower.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write lower file");
        }
        for (path, target) in links {
            let p = lower.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            symlink(target, &p).expect("symlink");
        }
        let id = random_id();
        let cgroup = cgroup2_root()
            .join("kive-test.slice")
            .join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&cgroup).expect("create the container's cgroup");
        let binds: String = host_paths
            .iter()
            .map(|(node, inside)| {
                format!(
                    "mkdir -p {m}{inside}\nmount --bind {node} {m}{inside}\n",
                    m = merged.display(),
                    node = node.display(),
                )
            })
            .collect();
        let script = format!(
            "set -e\n\
             mount -t overlay overlay -o lowerdir={l},upperdir={u},workdir={w} {m}\n\
             mount --bind /usr {m}/usr\n\
             mount -o remount,bind,ro {m}/usr\n\
             {binds}\
             echo 0 > {cg}/cgroup.procs\n\
             exec chroot {m} /usr/bin/sleep 100000\n",
            l = lower.display(),
            u = upper.display(),
            w = work.display(),
            m = merged.display(),
            cg = cgroup.display(),
        );
        let unshare = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux) starts");
        let upid = unshare.id();
        let deadline = Instant::now() + super::DEADLINE;
        let pid = loop {
            let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    break pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the emulated container did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            id,
            pid,
            cgroup,
            base,
            unshare,
        }
    }

    /// Ends the container: its init is killed (and with it every process
    /// of its pid namespace) and reaped. The layers stay until drop.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .status();
        // `unshare --fork` reaps its child, then exits
        let _ = self.unshare.wait();
    }

    /// `/proc/<pid>/root`.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// The upper layer directory.
    pub fn upper(&self) -> PathBuf {
        self.base.path().join("upper")
    }

    /// The lower layer directory.
    pub fn lower(&self) -> PathBuf {
        self.base.path().join("lower")
    }

    /// Inode of the container's mount namespace.
    pub fn mnt_ns(&self) -> u32 {
        ns_inode(&format!("/proc/{}/ns/mnt", self.pid))
    }

    /// Runs a shell command inside the container (its namespaces, root and
    /// cgroup).
    pub fn exec(&self, cmd: &str) -> Output {
        self.exec_from(&self.cgroup, cmd)
    }

    /// Runs a shell command in the container's namespaces and root but in
    /// another cgroup: a process of another container reaching this one's
    /// files (a shared volume, `kubectl cp`).
    pub fn exec_from(&self, cgroup: &Path, cmd: &str) -> Output {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo 0 > {}/cgroup.procs && exec nsenter -t {} -m -p -r -w -- /usr/bin/sh -c \"$0\"",
                cgroup.display(),
                self.pid
            ))
            .arg(cmd)
            .output()
            .expect("nsenter runs");
        assert!(
            out.status.success(),
            "in container: {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Container {
    /// Where `path` leads inside the container, symlinks followed
    /// (`readlink -f` there: in the test VM every command is busybox).
    pub fn real_path(&self, path: &str) -> String {
        let out = self.exec(&format!("readlink -f {path}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The inode number of a namespace link (`mnt:[4026531841]`).
pub fn ns_inode(link: &str) -> u32 {
    let t = std::fs::read_link(link).expect("ns link");
    let t = t.to_string_lossy();
    t[t.find('[').expect("[") + 1..t.len() - 1]
        .parse()
        .expect("ns inode")
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a path exists (not following symlinks).
pub fn exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The key of the layer file behind a container's file, seen from the
/// node (the upper copy, else the lower one): kive arms it with the
/// container's own key, so that reading the layer from the node is seen.
pub fn layer_key(c: &Container, path: &str) -> kive::trap::TrapKey {
    let rel = path.trim_start_matches('/');
    let upper = c.upper().join(rel);
    if upper.exists() {
        super::key_of(&upper)
    } else {
        super::key_of(&c.lower().join(rel))
    }
}

/// The key of a container's file as the container sees it (resolved inside
/// its root).
pub fn key_in(c: &Container, path: &str) -> kive::trap::TrapKey {
    kive::node::Root::open(c.root())
        .expect("container root")
        .resolve(path)
        .unwrap_or_else(|e| panic!("{path} in container: {e}"))
        .key
}
