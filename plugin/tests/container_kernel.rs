//! Traps inside an emulated container (overlayfs root, own mount and pid
//! namespaces, containerd-style cgroup), on this machine's kernel.

mod support;

use std::os::unix::fs::MetadataExt;

use kive::node::cgroup::CgroupIndex;
use kive::node::Root;
use kive::trap::{TierChoice, TrapValue};
use support::container::Container;
use support::{engine, events_for, events_until, quiet};

#[test]
fn paths_resolve_inside_the_container_never_on_the_host() {
    let c = Container::start(
        &[("/etc/passwd", "container-only passwd\n")],
        &[
            ("/link", "/etc"),
            ("/up", "../../../../etc"),
            ("/passwd-link", "/etc/passwd"),
        ],
    );
    let root = Root::open(c.root()).expect("container root");
    let own = root.resolve("/etc/passwd").expect("container passwd").key;
    let host = Root::open("/")
        .expect("/")
        .resolve("/etc/passwd")
        .expect("host passwd")
        .key;
    assert_ne!(own, host);
    // directory links on the way stay in the container's root
    for p in ["/link/passwd", "/up/passwd", "/../etc/passwd"] {
        assert_eq!(
            root.resolve(p).expect(p).key,
            own,
            "{p} stays in the container"
        );
    }
    // a link as the last component is never followed, even inside the root
    let e = root
        .resolve("/passwd-link")
        .expect_err("a last-component link is refused");
    assert!(e.to_string().contains("symlink"), "{e}");
    // what a plain stat of the joined path does (the trap kive avoids)
    let joined = std::fs::metadata(c.root().join("link/passwd")).expect("joined stat");
    assert_eq!(
        joined.ino(),
        std::fs::metadata("/etc/passwd").expect("host").ino(),
        "a naive join follows the absolute symlink to the host's file"
    );
}

#[test]
fn a_trap_armed_through_the_overlay_fires_from_inside_and_survives_copy_up() {
    let c = Container::start(&[("/secret.txt", "lower secret\n")], &[]);
    let root = Root::open(c.root()).expect("container root");
    let key = root.resolve("/secret.txt").expect("resolve").key;
    assert_eq!(key.dev >> 20, 0, "overlayfs has an anonymous device");
    let (e, rx) = engine(TierChoice::Tracepoint);
    e.arm(
        key,
        TrapValue {
            trap_id: 11,
            block: false,
            conditions: 0,
        },
    )
    .expect("arm");

    c.exec("cat /secret.txt");
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].comm(), "cat");
    assert_eq!(
        evs[0].mnt_ns,
        c.mnt_ns(),
        "the access came from the container's mount ns"
    );
    assert_ne!(
        evs[0].ns_pid, evs[0].tgid,
        "pid inside the container's pid namespace"
    );

    // the event's cgroup id maps back to the container
    let mut idx = CgroupIndex::for_this_node();
    let found = idx
        .container(evs[0].cgroup_id)
        .expect("cgroup id → container");
    assert_eq!(found.id, c.id);
    assert_eq!(found.uri(), format!("containerd://{}", c.id));

    // a write copies the file up to the upper layer; the key stays valid
    assert!(!support::container::exists_nofollow(
        &c.upper().join("secret.txt")
    ));
    c.exec("echo more >> /secret.txt");
    assert!(c.upper().join("secret.txt").exists(), "copied up");
    assert_eq!(
        root.resolve("/secret.txt").expect("resolve").key,
        key,
        "same key after copy-up"
    );
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].mask & 0x2, 0x2, "write");
    c.exec("cat /secret.txt");
    assert_eq!(
        events_until(&rx, key, 1).len(),
        1,
        "still trapped after copy-up"
    );
}

#[test]
fn replicas_of_one_image_have_distinct_keys() {
    let a = Container::start(&[("/secret.txt", "same image\n")], &[]);
    let b = Container::start(&[("/secret.txt", "same image\n")], &[]);
    let ka = Root::open(a.root())
        .expect("a")
        .resolve("/secret.txt")
        .expect("a")
        .key;
    let kb = Root::open(b.root())
        .expect("b")
        .resolve("/secret.txt")
        .expect("b")
        .key;
    assert_ne!(ka, kb, "each container's overlay has its own device");
    let (e, rx) = engine(TierChoice::Tracepoint);
    e.arm(
        ka,
        TrapValue {
            trap_id: 1,
            block: false,
            conditions: 0,
        },
    )
    .expect("arm a");
    b.exec("cat /secret.txt");
    assert!(
        events_for(&rx, ka, quiet()).is_empty(),
        "b's copy is not a's trap"
    );
    a.exec("cat /secret.txt");
    assert_eq!(events_until(&rx, ka, 1).len(), 1);
}

fn pod_runtime(c: &Container, traps: &str) -> kive::runtime::Runtime {
    let (rt, report) = pod_runtime_report(c, traps);
    assert!(report.pending.is_empty(), "{report:?}");
    rt
}

/// A runtime with `traps` (YAML list items) applied to the container as
/// pod web-0's, and what the reconcile reported.
fn pod_runtime_report(
    c: &Container,
    traps: &str,
) -> (kive::runtime::Runtime, kive::runtime::PodReconcileReport) {
    pod_runtime_on(c, traps, "/")
}

/// [`pod_runtime_report`] with the node's root seen at `host_root`.
fn pod_runtime_on(
    c: &Container,
    traps: &str,
    host_root: &str,
) -> (kive::runtime::Runtime, kive::runtime::PodReconcileReport) {
    use kive::runtime::{ContainerOwner, DesiredEntry, Runtime, RuntimeConfig};
    support::ensure_mounts();
    let cfg = RuntimeConfig {
        rescan: std::time::Duration::from_secs(3600),
        node_name: "node-a".into(),
        engine: kive::trap::EngineConfig {
            tier: TierChoice::Tracepoint,
            ..Default::default()
        },
        host_root: host_root.into(),
        ..Default::default()
    };
    let (rt, start) = Runtime::start(&cfg, &[]).expect("runtime");
    assert!(start.failures.is_empty(), "{start:?}");
    let text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: decoys, namespace: kive-system}}\nspec:\n  traps:\n{traps}"
    );
    let compiled = kive::policy::load_str("pod-test", &text);
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let owner = std::sync::Arc::new(ContainerOwner {
        pod: "web-0".into(),
        namespace: "default".into(),
        pod_uid: "uid-web-0".into(),
        container: "app".into(),
        container_id: format!("containerd://{}", c.id),
        ..Default::default()
    });
    let desired: Vec<DesiredEntry> = compiled
        .traps
        .iter()
        .map(|t| DesiredEntry {
            trap: t.clone(),
            owner: owner.clone(),
            host: false,
        })
        .collect();
    let report = rt.pod_controller().reconcile(&desired);
    assert_eq!(
        report.armed + report.pending.len(),
        desired.len(),
        "{report:?}"
    );
    (rt, report)
}

const POD_SELECTOR: &str = "    matchAny: [{namespace: default}]\n";

/// The node's root given as another path than `/` (`hostRoot: /host` in a
/// DaemonSet; here `/proc/self/root`, the same tree, no mount made): the
/// node's mounts are read from its init, so a pod's own files arm as with
/// `/`, and a file of a node tmpfs the pod mounts stays pending as
/// node-shared: found in the node's table (a mount of a virtual
/// filesystem in no line of it would count as the container's own).
#[test]
fn pod_traps_arm_when_the_node_s_root_is_given_elsewhere() {
    let tmpfs = ["/dev/shm", "/dev"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .expect("/dev");
    let node_dir = tempfile::tempdir_in(tmpfs).expect("a directory on the node's tmpfs");
    std::fs::write(node_dir.path().join("shared.txt"), "the node's file\n").expect("write");
    let c = Container::start_with(
        &[("/secret.txt", "image secret\n")],
        &[],
        &[(node_dir.path(), "/hostdata")],
    );
    let traps = format!(
        "  - path: /secret.txt\n{POD_SELECTOR}  - path: /decoy\n    create: true\n{POD_SELECTOR}  - path: /hostdata/shared.txt\n{POD_SELECTOR}"
    );
    let host = "/proc/self/root";
    let (rt, report) = pod_runtime_on(&c, &traps, host);
    assert_eq!(report.armed, 2, "the pod's own files armed: {report:?}");
    match report.pending.as_slice() {
        [why] => assert!(
            why.contains("trap 2 (/hostdata/shared.txt)")
                && why.contains("not armed without allowSharedFile"),
            "the node's file is pending as node-shared: {why}"
        ),
        other => panic!("one trap pending, the node's file: {other:?}"),
    }
    assert!(c.upper().join("decoy").exists(), "the decoy was created");
    c.exec("cat /secret.txt /decoy");
    let got = support::alerts_until(&rt, 2);
    assert_eq!(got.len(), 2, "one alert per open inside: {got:#?}");
    assert!(
        got.iter().all(|a| a.pod.name == "web-0"),
        "the pod's alerts: {got:#?}"
    );
}

#[test]
fn reading_the_overlay_layers_from_the_node_is_seen_and_names_the_container() {
    let c = Container::start(&[("/secret.txt", "image secret\n")], &[]);
    let traps = format!(
        "  - path: /secret.txt\n{POD_SELECTOR}  - path: /decoy\n    create: true\n{POD_SELECTOR}"
    );
    let rt = pod_runtime(&c, &traps);
    let lower = c.base.path().join("lower/secret.txt");
    let upper_decoy = c.upper().join("decoy");
    assert!(
        upper_decoy.exists(),
        "a created decoy lives in the upper layer"
    );

    let check = |file: &std::path::Path, trap: &str| {
        let (pid, out) = support::run(std::process::Command::new("cat").arg(file));
        assert!(out.status.success(), "cat {}", file.display());
        let got = support::alerts_until(&rt, 1);
        assert_eq!(
            got.len(),
            1,
            "cat {} from the node: {got:#?}",
            file.display()
        );
        let a = &got[0];
        assert_eq!(a.process.tgid, pid);
        assert_eq!(a.metadata.trap_path, trap);
        assert_eq!(
            (a.pod.name.as_str(), a.pod.container.name.as_str()),
            ("web-0", "app"),
            "the alert names the container whose file it is"
        );
        assert_eq!(
            a.metadata.inode,
            std::fs::metadata(file).expect("stat").ino(),
            "the backing inode itself"
        );
    };
    check(&lower, "/secret.txt");
    check(&upper_decoy, "/decoy");

    // inside the container: one alert per open, not one per layer
    c.exec("cat /secret.txt /decoy");
    let got = support::alerts_until(&rt, 2);
    assert_eq!(got.len(), 2, "{got:#?}");

    // copy-up: the upper copy backs the file now; the rescan follows it
    c.exec("echo more >> /secret.txt");
    let write = support::alerts_until(&rt, 1);
    assert_eq!(write.len(), 1, "the append: {write:#?}");
    rt.rescan_now();
    let upper = c.upper().join("secret.txt");
    assert!(upper.exists(), "copied up");
    check(&upper, "/secret.txt");
    support::run(std::process::Command::new("cat").arg(&lower));
    assert!(
        support::alerts(&rt, support::quiet()).is_empty(),
        "the image file no longer backs the container's copy"
    );
}

#[test]
fn a_pod_trap_never_arms_or_creates_on_a_host_path_unless_allowed() {
    let node_dir = support::world_dir();
    let shared = node_dir.path().join("shared.txt");
    std::fs::write(&shared, "the node's file\n").expect("write");
    let c = Container::start_with(&[], &[], &[(node_dir.path(), "/hostdata")]);
    let traps = [
        "  - path: /hostdata/shared.txt\n",
        POD_SELECTOR,
        "  - path: /hostdata/decoy\n    create: true\n",
        POD_SELECTOR,
        "  - path: /hostdata/decoy2\n    create: true\n    allowSharedFile: true\n",
        POD_SELECTOR,
    ]
    .concat();
    let (rt, report) = pod_runtime_report(&c, &traps);
    assert_eq!(report.armed, 0, "{report:?}");
    assert_eq!(report.pending.len(), 3, "{report:?}");
    for (i, path) in [
        "/hostdata/shared.txt",
        "/hostdata/decoy",
        "/hostdata/decoy2",
    ]
    .iter()
    .enumerate()
    {
        let why = report
            .pending
            .iter()
            .find(|p| p.contains(&format!("trap {i} (")))
            .unwrap_or_else(|| panic!("trap {i} pending: {report:?}"));
        assert!(
            why.contains("policy kive-system/decoys") && why.contains(path),
            "the reason names policy, trap and path: {why}"
        );
        if i < 2 {
            assert!(why.contains("node-shared"), "{why}");
        }
    }
    assert!(
        !node_dir.path().join("decoy").exists() && !node_dir.path().join("decoy2").exists(),
        "nothing is created on the node's directory, allowed or not"
    );
    assert!(rt.kernel_keys().is_empty(), "nothing armed");
    support::run(std::process::Command::new("cat").arg(&shared));
    assert!(support::alerts(&rt, support::quiet()).is_empty());
    drop(rt);

    // said explicitly: the existing node file is armed for the pod
    let traps =
        format!("  - path: /hostdata/shared.txt\n    allowSharedFile: true\n{POD_SELECTOR}");
    let rt = pod_runtime(&c, &traps);
    let (pid, _) = support::run(std::process::Command::new("cat").arg(&shared));
    let got = support::alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].process.tgid, got[0].pod.name.as_str()),
        (pid, "web-0")
    );
}
