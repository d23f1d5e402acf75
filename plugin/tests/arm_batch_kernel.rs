//! Arming a large batch (a cold start arms every entry in one): it is cut
//! into parts run side by side on several workers, and what is armed is
//! still exactly the plan; a broken trap or a full trap map among them is
//! refused by name and never keeps the others from arming. The batches
//! here are larger than one part (256 entries) on every machine; whether
//! they run side by side depends on its cores, what they arm does not.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kive::runtime::{ContainerOwner, DesiredEntry, Runtime};
use kive::trap::{TierChoice, TrapKey};
use support::container::{key_in, layer_key, Container};
use support::key_of;

/// Entries per test: two parts and a half.
const N: usize = 640;

/// `n` trapped files in `dir` (`f-<i>`), each its own inode.
fn files(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("f-{i}"));
            std::fs::write(&p, "x").unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
            p
        })
        .collect()
}

fn start(paths: &[PathBuf], max_traps: Option<u32>) -> (Runtime, kive::runtime::ArmReport) {
    support::ensure_mounts();
    let list: Vec<(&Path, &str)> = paths.iter().map(|p| (p.as_path(), "")).collect();
    let traps = support::runtime::host_traps("batch", &list);
    let mut cfg = support::runtime::config(TierChoice::Tracepoint);
    if let Some(m) = max_traps {
        cfg.engine.max_traps = m;
    }
    Runtime::start(&cfg, &traps).unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn keys(paths: &[PathBuf]) -> BTreeSet<TrapKey> {
    paths.iter().map(|p| key_of(p)).collect()
}

#[test]
fn a_parallel_arm_arms_exactly_the_plan() {
    let d = support::world_dir();
    let paths = files(d.path(), N);
    let (rt, report) = start(&paths, None);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.armed, N, "every entry armed once: {report:?}");
    let kernel: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
    assert_eq!(
        kernel,
        keys(&paths),
        "the kernel holds exactly the planned keys, none missing, none extra"
    );
    let m = rt.metrics();
    assert_eq!((m.armed, m.pending), (N, 0), "{m:?}");
    assert_eq!(m.stalls, 0, "no entry stalled: {m:?}");
}

#[test]
fn broken_traps_in_a_parallel_batch_never_disable_the_others() {
    let d = support::world_dir();
    let mut paths = files(d.path(), N);
    // one broken trap in each part: a directory, a missing file, a symlink
    // (never followed at the last component)
    let dir = d.path().join("a-directory");
    std::fs::create_dir(&dir).expect("mkdir");
    let missing = d.path().join("missing");
    let link = d.path().join("a-link");
    std::os::unix::fs::symlink(&paths[0], &link).expect("symlink");
    let broken = [(5, dir), (N / 2, missing), (N - 3, link)];
    for (at, p) in &broken {
        paths.insert(*at, p.clone());
    }
    let (rt, report) = start(&paths, None);
    assert_eq!(report.armed, N, "every good trap armed: {report:?}");
    assert_eq!(report.failures.len(), broken.len(), "{:?}", report.failures);
    for (_, p) in &broken {
        let p = p.display().to_string();
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.contains("policy test/batch trap") && f.contains(&p)),
            "the refusal names the trap at {p}: {:?}",
            report.failures
        );
    }
    let good: Vec<PathBuf> = paths
        .iter()
        .filter(|p| !broken.iter().any(|(_, b)| b == *p))
        .cloned()
        .collect();
    let kernel: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
    assert_eq!(
        kernel,
        keys(&good),
        "exactly the good traps' keys are armed"
    );
    let m = rt.metrics();
    assert_eq!((m.armed, m.pending), (N, broken.len()), "{m:?}");
}

#[test]
fn a_full_map_in_a_parallel_batch_refuses_each_trap_by_name_and_counts_it() {
    let d = support::world_dir();
    let paths = files(d.path(), N);
    let room = N - 40;
    let (rt, report) = start(&paths, Some(room as u32));
    assert_eq!(
        report.armed, room,
        "the map filled to its capacity: {report:?}"
    );
    assert_eq!(report.failures.len(), N - room, "{:?}", report.failures);
    for f in &report.failures {
        assert!(
            f.contains("policy test/batch trap") && f.contains("the trap map is full"),
            "each refusal names its trap and says why: {f}"
        );
    }
    let refused: BTreeSet<&str> = report
        .failures
        .iter()
        .filter_map(|f| {
            paths
                .iter()
                .find(|p| f.contains(&format!("({})", p.display())))
        })
        .filter_map(|p| p.to_str())
        .collect();
    assert_eq!(refused.len(), N - room, "each refused trap named once");
    let kernel: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
    assert_eq!(kernel.len(), room, "the kernel holds what fitted");
    assert!(kernel.is_subset(&keys(&paths)), "and only planned keys");
    let m = rt.metrics();
    assert_eq!((m.armed, m.pending), (room, N - room), "{m:?}");
    assert_eq!(
        m.trap_map_full,
        (N - room) as u64,
        "every refusal counted: {m:?}"
    );
}

#[test]
fn containers_found_on_the_workers_arm_each_entry_in_its_own_root() {
    // four containers x 160 traps: the cold start's batch (640 entries) is
    // cut into parts, and each part's worker finds its containers itself
    const PER: usize = N / 4;
    let files: Vec<(String, String)> = (0..PER)
        .map(|i| (format!("/t/f-{i}"), format!("in the image {i}\n")))
        .collect();
    let list: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let containers: Vec<Container> = (0..4).map(|_| Container::start(&list, &[])).collect();
    support::ensure_mounts();
    let (rt, _) = Runtime::start(&support::runtime::config(TierChoice::Tracepoint), &[])
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let traps: String = files
        .iter()
        .map(|(p, _)| format!("  - path: {p}\n    matchAny: [{{namespace: default}}]\n"))
        .collect();
    let text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: decoys, namespace: kive-system}}\nspec:\n  traps:\n{traps}"
    );
    let compiled = kive::policy::load_str("pod-test", &text);
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let owner = |i: usize, id: &str| {
        std::sync::Arc::new(ContainerOwner {
            pod: format!("web-{i}"),
            namespace: "default".into(),
            pod_uid: format!("uid-web-{i}"),
            container: "app".into(),
            container_id: format!("containerd://{id}"),
            ..Default::default()
        })
    };
    // a fifth pod whose container runs nowhere: its entries stay pending,
    // each named, and never disable the others
    let ghost = "9".repeat(64);
    let owners: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| owner(i, &c.id))
        .chain([owner(4, &ghost)])
        .collect();
    let desired: Vec<DesiredEntry> = owners
        .iter()
        .flat_map(|o| {
            compiled.traps.iter().map(|t| DesiredEntry {
                trap: t.clone(),
                owner: o.clone(),
                host: false,
            })
        })
        .collect();
    let report = rt.pod_controller().reconcile(&desired);
    assert_eq!(report.armed, 4 * PER, "{report:?}");
    assert_eq!(report.unlocated, PER, "the ghost's entries: {report:?}");
    assert_eq!(report.pending.len(), PER, "{report:?}");
    for msg in &report.pending {
        assert!(
            msg.contains("is not running on this node yet") && msg.contains("pod default/web-4"),
            "each pending entry names why and whose: {msg}"
        );
    }
    for c in &containers {
        assert_eq!(rt.armed_for_container(&c.id), PER, "container {}", c.id);
    }
    // each entry resolved in its own container's root: the kernel holds
    // exactly each container's own files (and the layer files behind
    // them), none of another root's, none of the node's
    let want: BTreeSet<TrapKey> = containers
        .iter()
        .flat_map(|c| {
            files
                .iter()
                .flat_map(move |(p, _)| [key_in(c, p), layer_key(c, p)])
        })
        .collect();
    let kernel: BTreeSet<TrapKey> = rt.kernel_keys().into_iter().collect();
    assert_eq!(kernel, want, "exactly the containers' own keys");
    assert_eq!(rt.metrics().stalls, 0, "no entry stalled");
}
