//! Reconcile benchmark: N pods × M traps served by the test API server
//! (real kube client, real watch protocol), on this machine's kernel.
//!
//! Each "pod" is one container: a `sleep` process in its own
//! `cri-containerd-<id>.scope` cgroup, where kubelet's systemd driver puts
//! it (`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/`,
//! the pod uids unique to the run). They share the host's root (no
//! overlay per pod, which would need N mounts), so the M trap paths resolve
//! to M files; every (trap, container) is still its own entry, found by
//! cgroup, resolved through `/proc/<pid>/root` and armed. Prints a table:
//! time from start until every entry is armed, then time until one pod's
//! container restart (new id) is re-armed.
//!
//! `cargo bench -p kive --bench reconcile -- [pods] [traps]` (default 1000 10).
//!
//! `--distinct`: a file per pod instead. Each container's process runs in a
//! mount namespace of its own (`unshare --mount --propagation private`),
//! where a directory of its own (in the bench's temp dir, holding the M
//! trap files) is bind-mounted over the trap directory the policy names:
//! the same trap path resolves to a distinct inode per container, N × M
//! distinct keys. The bind mounts live only in the children's namespaces
//! and go with them. No entry shares a pin: the process needs about
//! N × (M + 1) + 1024 open files (the bench stops at once if it cannot
//! raise its limit that far).

// the test API server in its own process: the bench process's memory is kive's
#[path = "reconcile/remote_api.rs"]
mod apiserver;
#[path = "reconcile/heap.rs"]
mod heap;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use apiserver::{ApiServer, Kind};
use kive::k8s::{ClusterConfig, ClusterSource};
use kive::runtime::{Runtime, RuntimeConfig};
use serde_json::json;

struct FakeContainer {
    id: String,
    cgroup: std::path::PathBuf,
    child: Child,
    /// `--distinct`: the directory its trap paths resolve to.
    files: Option<PathBuf>,
}

/// `--distinct`: the trap directory the policy names, the directory the
/// containers' own directories are made in, and the trap count.
struct Distinct {
    trap_dir: PathBuf,
    pods_dir: PathBuf,
    traps: usize,
}

static DISTINCT: OnceLock<Distinct> = OnceLock::new();

/// `--distinct`: container `n`'s generation `gen` gets a directory of its
/// own (a new container, new files: its overlay's, on a node), holding the
/// trap files.
fn own_files(d: &Distinct, n: usize, gen: usize) -> PathBuf {
    let dir = d.pods_dir.join(format!("pod-{n}-{gen}"));
    std::fs::create_dir_all(&dir).expect("pod files dir");
    for t in 0..d.traps {
        std::fs::write(dir.join(format!("decoy-{t}")), "x").expect("pod file");
    }
    dir
}

/// Pod uids unique to this run (another run's or a real kubelet's pods are
/// never touched).
fn pod_uid(i: usize) -> String {
    format!("kivebench{}-{i}", std::process::id())
}

/// Removes the empty pod cgroups an interrupted earlier run left behind
/// (`kivebench<pid>-…` of a pid that is gone): thousands of them slow every
/// later cgroup walk, the accessor's index of the live events bench too.
/// `rmdir` never removes a cgroup that still holds a process.
fn sweep_stale_runs() {
    let Ok(pods) = std::fs::read_dir(qos_slice()) else {
        return;
    };
    let mut swept = 0;
    for pod in pods.flatten() {
        let name = pod.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("kubepods-besteffort-podkivebench")
            .and_then(|rest| rest.split('_').next())
        else {
            continue;
        };
        if std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(scopes) = std::fs::read_dir(pod.path()) {
            for scope in scopes.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(scope.path());
            }
        }
        if std::fs::remove_dir(pod.path()).is_ok() {
            swept += 1;
        }
    }
    if swept > 0 {
        println!("removed {swept} empty pod cgroups left by interrupted earlier runs");
    }
}

fn qos_slice() -> std::path::PathBuf {
    cgroup2_root().join("kubepods.slice/kubepods-besteffort.slice")
}

fn cgroup2_root() -> std::path::PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    kive::node::cgroup::cgroup2_mount_point(&mi).expect("cgroup v2 mounted")
}

fn container(n: usize, gen: usize) -> FakeContainer {
    let id = format!("{:032x}{:032x}", 0xbe0c_u64 + gen as u64, n as u64);
    let cgroup = qos_slice()
        .join(format!(
            "kubepods-besteffort-pod{}.slice",
            pod_uid(n).replace('-', "_")
        ))
        .join(format!("cri-containerd-{id}.scope"));
    std::fs::create_dir_all(&cgroup).expect("cgroup dir");
    let join = format!(
        "echo 0 > {}/cgroup.procs && exec sleep 100000",
        cgroup.display()
    );
    let (child, files) = match DISTINCT.get() {
        None => (
            Command::new("sh")
                .arg("-c")
                .arg(join)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
            None,
        ),
        Some(d) => {
            let own = own_files(d, n, gen);
            // the bind mount is made before the process joins its cgroup,
            // which the wait below sees
            let child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind '{}' '{}' && {join}",
                    own.display(),
                    d.trap_dir.display()
                ))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn unshare (util-linux)");
            (child, Some(own))
        }
    };
    // running, as kubelet reports it: the process is in its cgroup
    let procs = cgroup.join("cgroup.procs");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&procs).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} stayed empty",
            procs.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    FakeContainer {
        id,
        cgroup,
        child,
        files,
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.cgroup).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // the pod slice, then the QoS slices if no one else uses them
        let mut dir = self.cgroup.parent();
        for _ in 0..3 {
            match dir {
                Some(d) if std::fs::remove_dir(d).is_ok() => dir = d.parent(),
                _ => break,
            }
        }
    }
}

fn pod(i: usize, cid: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("web-{i}"), "namespace": "default", "uid": pod_uid(i),
                     "labels": {"app": "web"}},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"podIP": format!("10.2.{}.{}", i / 250, i % 250),
                   "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "",
                     "containerID": format!("containerd://{cid}"), "ready": true, "restartCount": 0,
                     "state": {"running": {"startedAt": "2026-11-22T00:00:00Z"}}}]}
    })
}

fn main() {
    apiserver::serve_if_child();
    // kive's allocator (mimalloc) counts from here: the bench's own
    // allocations before kive starts are the baseline
    heap::start();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let distinct = std::env::args().any(|a| a == "--distinct");
    sweep_stale_runs();
    let pods = args.first().copied().unwrap_or(1000);
    let traps = args.get(1).copied().unwrap_or(10);
    let files = tempfile::tempdir().expect("tmp");
    // `--distinct`: the policy names files in `traps/`, over which each
    // container mounts its own directory
    let trap_dir = if distinct {
        let trap_dir = files.path().join("traps");
        let pods_dir = files.path().join("pods");
        std::fs::create_dir_all(&trap_dir).expect("trap dir");
        let set = DISTINCT.set(Distinct {
            trap_dir: trap_dir.clone(),
            pods_dir,
            traps,
        });
        assert!(set.is_ok(), "distinct mode set twice");
        trap_dir
    } else {
        files.path().to_path_buf()
    };
    let trap_list: Vec<serde_json::Value> = (0..traps)
        .map(|t| {
            let p = trap_dir.join(format!("decoy-{t}"));
            std::fs::write(&p, "x").expect("file");
            json!({"path": p.display().to_string(), "allowSharedFile": true,
                   "matchAny": [{"namespace": "default", "matchLabels": {"app": "web"}}]})
        })
        .collect();

    // the bench holds a child per pod and the runtime a pin per entry
    let limit = kive::node::limits::ensure_nofile((pods * (traps + 4) + 4096) as u64);
    // `--distinct`: no entry shares another's file, so each holds a pin of
    // its own: under a lower limit entries would stay pending, never armed
    let need = (pods * (traps + 1) + 1024) as u64;
    if distinct && limit.is_some_and(|l| l < need) {
        eprintln!(
            "--distinct: {pods} pods x {traps} traps need about {need} open files (a pin per entry); the limit is {} and could not be raised (CAP_SYS_RESOURCE): fewer pods or traps",
            limit.unwrap_or_default()
        );
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let mut containers: Vec<FakeContainer> = (0..pods).map(|i| container(i, 0)).collect();
    let spawn_s = t0.elapsed().as_secs_f64();

    let api = ApiServer::start();
    // the pods' namespace, listed (the cluster source waits briefly for
    // namespace labels)
    api.apply(
        Kind::Namespace,
        json!({"metadata": {"name": "default", "labels": {"team": "bench"}}}),
    );
    for (i, c) in containers.iter().enumerate() {
        api.apply(Kind::Pod, pod(i, &c.id));
    }
    api.apply(
        Kind::Policy,
        json!({"metadata": {"name": "bench", "namespace": "kivebpf-system"}, "spec": {"traps": trap_list}}),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);

    // what the bench holds before kive starts: the child handles (the
    // test API server is another process; kive's part is the growth from here)
    let rss_before = kive::node::limits::rss_bytes();
    let mem_start = heap::snapshot();
    heap::reset_peak();
    let cfg = RuntimeConfig {
        node_name: "bench-node".into(),
        rescan: Duration::from_secs(3600),
        ..Default::default()
    };
    let start = Instant::now();
    let (rt, _) = Runtime::start(&cfg, &[]).expect("runtime");

    let cluster = ClusterSource::start(
        ClusterConfig {
            kubeconfig: Some(kubeconfig),
            node_name: "bench-node".into(),
            resync: Duration::from_secs(3600),
            scope: Default::default(),
        },
        rt.pod_controller(),
    )
    .expect("cluster source");
    // the cluster source's counters (atomics, set after each reconcile):
    // polling them costs the runtime nothing (the runtime's metrics read
    // /proc/self/fd and would take a core from kive at this scale)
    let status = cluster.status();
    let armed = || status.armed.load(Ordering::Relaxed);
    let reconciles = || status.reconciles.load(Ordering::Relaxed);
    let want = pods * traps;
    while armed() < want {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "cold start did not finish"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let cold = start.elapsed();
    let mem_cold = heap::snapshot();
    heap::reset_peak();
    let cold_reconciles = reconciles();
    // distinct keys (files) armed: the table's, synced to the kernel map
    // (read once here, past the clock: the metrics read /proc/self/fd)
    let cold_keys = rt.metrics().trap_map_keys;
    let want_keys = if distinct { want } else { traps };
    assert_eq!(
        cold_keys, want_keys,
        "distinct keys armed after the cold start ({want} entries)"
    );

    // one container restarts: the pod gets a new container id
    let fresh = container(0, 1);
    let new_id = fresh.id.clone();
    let before = reconciles();
    let change = Instant::now();
    api.apply(Kind::Pod, pod(0, &new_id));
    let old = std::mem::replace(&mut containers[0], fresh);
    let mut checked = before;
    let rearm = loop {
        let seen = reconciles();
        // re-armed: a reconcile after the change reports every entry armed,
        // none pending, and the new container's entries are the armed ones
        // (looked at once per reconcile, after the clock is read)
        if seen > checked && armed() == want && status.pending.load(Ordering::Relaxed) == 0 {
            let at = change.elapsed();
            checked = seen;
            if rt.armed_for_container(&new_id) == traps {
                break at;
            }
        }
        assert!(
            change.elapsed() < Duration::from_secs(120),
            "re-arm did not finish: {} reconcile(s) since the change, {} armed of {want}, {} pending, {} armed on the new container",
            reconciles() - before,
            armed(),
            status.pending.load(Ordering::Relaxed),
            rt.armed_for_container(&new_id)
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let touched = status.touched.load(Ordering::Relaxed);
    drop(old);
    let fds = kive::node::fds::open_fds();
    let rss = kive::node::limits::rss_bytes();
    let mem_restart = heap::snapshot();
    heap::reset_peak();
    // a rescan of every entry (what the rescan thread does each period;
    // its period here is an hour, so this is the first pass: nothing ran
    // before the figures above)
    let rescan_start = Instant::now();
    rt.rescan_now();
    let rescan = rescan_start.elapsed();
    // what a node holds from its first rescan on (a second after its cold
    // start at the default period): the table and the rescan's per-entry
    // stamps and watches
    let rss_rescanned = kive::node::limits::rss_bytes();
    let mem_rescanned = heap::snapshot();

    println!(
        "kive reconcile benchmark (test API server on loopback, real kube client, real eBPF maps), mode: {}",
        if distinct {
            "--distinct (a file per pod)"
        } else {
            "default (files shared by every pod)"
        }
    );
    println!("distinct keys armed after the cold start (trap map fill): {cold_keys}");
    println!();
    println!(
        "| pods | traps | entries | cold start → all armed | reconciles to arm | one container restart → re-armed | entries its reconcile touched | one full rescan | open fds | fd limit | RSS (whole bench process) | RSS growth from kive's start | RSS growth after the first rescan |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {pods} | {traps} | {want} | {:.3} s | {cold_reconciles} | {:.1} ms | {touched} | {:.0} ms | {fds} | {} | {:.0} MiB | {:.1} MiB | {:.1} MiB |",
        cold.as_secs_f64(),
        rearm.as_secs_f64() * 1e3,
        rescan.as_secs_f64() * 1e3,
        limit.map_or("unlimited".to_string(), |l| l.to_string()),
        heap::mib(rss),
        heap::mib(rss.saturating_sub(rss_before)),
        heap::mib(rss_rescanned.saturating_sub(rss_before))
    );
    println!();
    heap::print_table(
        &[
            ("before kive starts", mem_start),
            ("cold start: all armed", mem_cold),
            ("one container restarted, re-armed", mem_restart),
            ("first rescan pass done (stamps, watches)", mem_rescanned),
        ],
        want,
        api.rss_bytes(),
    );
    rescan_rows(&rt, &api, &mut containers, &files, want, traps, rescan);
    notify_rows(&rt, &api, &mut containers, want, traps);

    let files_note = if distinct {
        format!("--distinct: each in a mount namespace of its own with a directory of its own bind-mounted over the trap directory: {want} entries on {cold_keys} distinct files (keys)")
    } else {
        format!("default: sharing the host's root, {want} entries on {cold_keys} files (keys)")
    };
    println!(
        "method: {pods} sleep processes in their own cri-containerd-<id>.scope cgroups (spawned in {spawn_s:.2} s, not counted), {files_note}; \
         the clock starts before the engine loads and stops when the cluster source's last reconcile reports {want} armed entries; \
         the restart is a MODIFIED pod with a new containerID, timed until a reconcile after it reports every entry armed and none pending (then checked: the new container's {traps} entries armed, the old ones removed); \
         fds and RSS are the bench process's (runtime + kube client + {pods} child handles; the test API server runs in a child process of its own) after the restart, before any rescan (the rescan thread's period is set to an hour: no pass runs on its own during the bench); \
         RSS growth = RSS then minus RSS just before the runtime started: kive's runtime, its kube client and watch stores, the trap table; the same once the bench's first rescan pass is done (the rescan's stamps and watches of every entry, what a node holds from its first pass on); \
         live heap = bytes held through kive's global allocator (mimalloc, its counters on), growth from the runtime's start; glibc arenas/kept free (C code: libbpf) from mallinfo2; \
         the full rescan re-resolves every entry once (Runtime::rescan_now)."
    );
}

/// One rescan pass, timed; and how many entries it resolved in full.
fn timed_rescan(rt: &Runtime) -> (Duration, u64) {
    let before = rt.metrics().rescan_resolved;
    let t = Instant::now();
    rt.rescan_now();
    let took = t.elapsed();
    (took, rt.metrics().rescan_resolved - before)
}

/// One pass, timed: entries looked at (unchanged + resolved) and resolved
/// in full; `full`: the safety net's pass (every armed entry looked at, the
/// rescan before change notification), else the notification-driven pass.
fn timed_pass(rt: &Runtime, full: bool) -> (Duration, u64, u64) {
    let m = rt.metrics();
    let t = Instant::now();
    if full {
        rt.rescan_full_now();
    } else {
        rt.rescan_now();
    }
    let took = t.elapsed();
    let n = rt.metrics();
    (
        took,
        (n.rescan_unchanged + n.rescan_resolved) - (m.rescan_unchanged + m.rescan_resolved),
        n.rescan_resolved - m.rescan_resolved,
    )
}

/// Restarts pod `i`'s container (new id) and waits until it is re-armed.
fn restart(
    rt: &Runtime,
    api: &ApiServer,
    containers: &mut [FakeContainer],
    i: usize,
    want: usize,
    traps: usize,
) {
    let fresh = container(i, 2);
    let new_id = fresh.id.clone();
    api.apply(Kind::Pod, pod(i, &new_id));
    let old = std::mem::replace(&mut containers[i], fresh);
    let start = Instant::now();
    while !(rt.metrics().armed == want && rt.armed_for_container(&new_id) == traps) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "re-arm did not finish"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(old);
}

/// Change notification against the full look, side by side: nothing
/// changed; one container changed (a restart each: pod 2 for the
/// notification pass, pod 3 for the full one).
fn notify_rows(
    rt: &Runtime,
    api: &ApiServer,
    containers: &mut [FakeContainer],
    want: usize,
    traps: usize,
) {
    let m = rt.metrics();
    // the file replaced in the rows before is named once more when kive lets
    // go of the old one (its deletion): that echo is taken first
    let _echo = timed_pass(rt, false);
    let quiet = timed_pass(rt, false);
    let quiet_full = timed_pass(rt, true);
    restart(rt, api, containers, 2 % containers.len(), want, traps);
    let one = timed_pass(rt, false);
    restart(rt, api, containers, 3 % containers.len(), want, traps);
    let one_full = timed_pass(rt, true);
    println!();
    println!(
        "| rescan pass ({want} entries armed) | change notification: time | looked at | full look (before; now the safety net): time | looked at |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (what, (t, looked, _), (tf, looked_f, _)) in [
        ("nothing changed", quiet, quiet_full),
        ("one container changed (restart)", one, one_full),
    ] {
        println!(
            "| {what} | {:.2} ms | {looked} | {:.1} ms | {looked_f} |",
            t.as_secs_f64() * 1e3,
            tf.as_secs_f64() * 1e3
        );
    }
    println!(
        "marks: {} placed by the first pass in {:.0} ms of it (rescan thread, after the cold start), {} mount namespace(s) watched, {} entries watched, {} not watchable",
        m.notify_marks,
        m.notify_mark_time_us as f64 / 1e3,
        m.notify_mount_watches,
        m.notify_watched,
        m.notify_unwatched
    );
}

/// Rescans in proportion to what changed, after the full pass above (which
/// remembered every entry): nothing changed; one container changed (pod 1
/// restarts: its entries are new); one trapped file replaced (the bench's
/// containers share the node's root: one entry per container changes).
fn rescan_rows(
    rt: &Runtime,
    api: &ApiServer,
    containers: &mut [FakeContainer],
    files: &tempfile::TempDir,
    want: usize,
    traps: usize,
    first: Duration,
) {
    let first_resolved = rt.metrics().rescan_resolved;
    let quiet = timed_rescan(rt);
    let i = 1 % containers.len();
    let fresh = container(i, 1);
    let new_id = fresh.id.clone();
    api.apply(Kind::Pod, pod(i, &new_id));
    let old = std::mem::replace(&mut containers[i], fresh);
    let start = Instant::now();
    while !(rt.metrics().armed == want && rt.armed_for_container(&new_id) == traps) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "re-arm did not finish"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(old);
    let one = timed_rescan(rt);
    // the file the first container sees (its own in `--distinct`)
    let dir = containers[0].files.as_deref().unwrap_or(files.path());
    let decoy = dir.join("decoy-0");
    let tmp = dir.join(".decoy-0.new");
    std::fs::write(&tmp, "y").expect("write");
    std::fs::rename(&tmp, &decoy).expect("replace");
    let replaced = timed_rescan(rt);
    println!();
    println!("| rescan pass | entries resolved in full | time |");
    println!("|---|---:|---:|");
    println!(
        "| first after arming (nothing remembered; {want} entries) | {first_resolved} | {:.1} ms |",
        first.as_secs_f64() * 1e3
    );
    for (what, (took, resolved)) in [
        ("nothing changed", quiet),
        ("one container changed (restart)", one),
        (
            if containers[0].files.is_some() {
                "one trapped file replaced (one container's own)"
            } else {
                "one trapped file replaced (shared by every container)"
            },
            replaced,
        ),
    ] {
        println!(
            "| {what} | {resolved} | {:.1} ms |",
            took.as_secs_f64() * 1e3
        );
    }
}
