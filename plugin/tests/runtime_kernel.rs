//! The runtime on this machine's kernel: alerts, re-arming when a trapped
//! path gets a new inode, the trapped inode followed when it is linked away,
//! missing files, rate limits and a full trap map (decoys: decoy_kernel.rs).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kive::policy::{load_str, CompiledTrap};
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::TierChoice;
use support::scenarios;
use support::{alerts_until, key_of, run, sorted, world_dir};

fn host_policy(path: &Path, extra: &str) -> Vec<Arc<CompiledTrap>> {
    support::runtime::host_traps("rt", &[(path, extra)])
}

/// CLOCK_BOOTTIME in ns, the clock of the kernel's event timestamps.
fn boottime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn config() -> RuntimeConfig {
    support::runtime::config(TierChoice::Tracepoint)
}

fn start(traps: &[Arc<CompiledTrap>]) -> Runtime {
    support::runtime::start(&config(), traps)
}

#[test]
fn a_replaced_file_is_re_armed_and_the_old_inode_stays_armed_while_linked() {
    let scenarios::Replaced {
        dir: _dir,
        rt,
        path: f,
        old_link: moved_old,
        old_key,
        new_key,
    } = scenarios::replaced_file(|f| host_policy(f, ""), start);
    assert_eq!(rt.metrics().rearms, 1);
    let tamper = alerts_until(&rt, 1);
    assert_eq!(tamper.len(), 1, "{tamper:#?}");
    let t = tamper[0].metadata.tamper.as_ref().expect("a tamper alert");
    assert_eq!(t.kind, "replace", "another file was moved over it");
    assert_eq!(t.old_path, f.display().to_string());
    assert_eq!(tamper[0].metadata.inode, old_key.ino);

    let (new_reader, _) = run(Command::new("cat").arg(&f));
    let (old_reader, _) = run(Command::new("cat").arg(&moved_old));
    let got = alerts_until(&rt, 2);
    assert_eq!(got.len(), 2, "both inodes alert: {got:#?}");
    let at_path = got
        .iter()
        .find(|a| a.process.tgid == new_reader)
        .expect("the file at the path alerts");
    assert_eq!(at_path.metadata.inode, new_key.ino);
    assert_eq!(at_path.metadata.armed_as, "", "still at its path");
    let away = got
        .iter()
        .find(|a| a.process.tgid == old_reader)
        .expect("the old inode alerts");
    assert_eq!(away.metadata.inode, old_key.ino);
    assert_eq!(away.metadata.armed_as, f.display().to_string());
    assert_eq!(away.policy_name, "rt");

    // its last link gone: let go
    std::fs::remove_file(&moved_old).expect("rm");
    rt.rescan_now();
    assert_eq!(rt.kernel_keys(), [new_key]);
}

#[test]
fn a_hard_link_then_an_unlink_of_the_trapped_name_keeps_the_inode_armed() {
    let d = world_dir();
    let f = d.path().join("secret.txt");
    let x = d.path().join("x");
    std::fs::write(&f, "s").expect("write");
    let rt = start(&host_policy(&f, ""));
    let key = key_of(&f);
    run(Command::new("ln").arg(&f).arg(&x));
    rt.rescan_now();
    let got = alerts_until(&rt, 1);
    assert_eq!(
        got.iter()
            .map(|a| a.metadata.tamper.as_ref().map(|t| t.kind.clone()))
            .collect::<Vec<_>>(),
        [Some("link".to_string())],
        "{got:#?}"
    );
    run(Command::new("rm").arg(&f));
    rt.rescan_now();
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0].metadata.tamper.as_ref().map(|t| t.kind.as_str()),
        Some("rename"),
        "its only name left is another one"
    );
    assert_eq!(rt.kernel_keys(), [key], "the inode stays armed");
    assert_eq!(
        (rt.metrics().armed, rt.metrics().pending),
        (0, 1),
        "the path itself is pending until a file appears there"
    );
    let (pid, _) = run(Command::new("cat").arg(&x));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "cat of the link is seen: {got:#?}");
    assert_eq!((got[0].metadata.inode, got[0].process.tgid), (key.ino, pid));
    assert_eq!(got[0].metadata.armed_as, f.display().to_string());
}

#[test]
fn a_missing_file_stays_pending_and_arms_when_it_appears() {
    let d = world_dir();
    let f = d.path().join("later");
    support::ensure_mounts();
    let cfg = RuntimeConfig {
        rescan: Duration::from_secs(3600),
        ..Default::default()
    };
    let traps = host_policy(&f, "");
    let (rt, report) = Runtime::start(&cfg, &traps).expect("runtime");
    assert_eq!(report.armed, 0);
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0].contains("policy test/rt trap 0")
            && report.failures[0].contains("does not exist"),
        "{}",
        report.failures[0]
    );
    assert_eq!((rt.metrics().armed, rt.metrics().pending), (0, 1));
    std::fs::write(&f, "now").expect("write");
    rt.rescan_now();
    assert_eq!(rt.kernel_keys(), [key_of(&f)]);
    assert_eq!((rt.metrics().armed, rt.metrics().pending), (1, 0));
}

/// WARN lines logged while `f` runs.
fn warnings_during(f: impl FnOnce()) -> Vec<String> {
    let logs = support::logs::Logs::capture(tracing::Level::WARN);
    f();
    logs.with(&["WARN"])
}

#[test]
fn a_file_that_stays_missing_is_reported_once_not_on_every_rescan() {
    let d = world_dir();
    let f = d.path().join("never");
    let traps = host_policy(&f, "");
    support::ensure_mounts();
    let (rt, report) = Runtime::start(&config(), &traps).expect("runtime");
    assert_eq!(report.failures.len(), 1, "reported once at start");
    let warned = warnings_during(|| {
        for _ in 0..5 {
            rt.rescan_now();
        }
    });
    assert!(warned.is_empty(), "the same reason again: {warned:#?}");
    // a different state: the file appears (armed), then goes again
    std::fs::write(&f, "x").expect("write");
    rt.rescan_now();
    assert_eq!(rt.metrics().armed, 1);
    std::fs::remove_file(&f).expect("remove");
    let warned = warnings_during(|| {
        for _ in 0..5 {
            rt.rescan_now();
        }
    });
    assert_eq!(warned.len(), 1, "one WARN for the new state: {warned:#?}");
    assert!(warned[0].contains("policy test/rt trap 0"), "{}", warned[0]);
}

#[test]
fn two_policies_on_one_file_give_one_alert_each() {
    let d = world_dir();
    let f = d.path().join("shared");
    std::fs::write(&f, "x").expect("write");
    let mut traps = host_policy(&f, "");
    let other = load_str(
        "second",
        &format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: second}}\nspec:\n  traps:\n  - path: {}\n    matchAny: [{{host: true}}]\n",
            f.display()
        ),
    );
    traps.extend(other.traps);
    let rt = start(&traps);
    assert_eq!(rt.kernel_keys().len(), 1);
    run(Command::new("cat").arg(&f));
    let mut names: Vec<String> = alerts_until(&rt, 2)
        .into_iter()
        .map(|a| a.policy_name)
        .collect();
    names.sort();
    assert_eq!(names, ["rt", "second"]);
}

/// Entries armed on a file other entries armed already skip the map update
/// when the key's value stays the same: a second trap that changes it (no
/// condition where the first had one) is still written to the kernel, in
/// either order.
#[test]
fn a_second_trap_on_an_armed_file_that_changes_its_value_reaches_the_kernel() {
    for conditioned_first in [true, false] {
        let d = world_dir();
        let f = d.path().join("shared");
        std::fs::write(&f, "x").expect("write");
        // root owns the file: `ownerOnly` lets root's reads pass in the kernel
        let owner_only = host_policy(&f, "    ownerOnly: true\n");
        let plain = load_str(
            "second",
            &format!(
                "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: second}}\nspec:\n  traps:\n  - path: {}\n    matchAny: [{{host: true}}]\n",
                f.display()
            ),
        );
        assert!(plain.errors.is_empty(), "{:?}", plain.errors);
        let traps: Vec<_> = if conditioned_first {
            owner_only.into_iter().chain(plain.traps).collect()
        } else {
            plain.traps.into_iter().chain(owner_only).collect()
        };
        let rt = start(&traps);
        assert_eq!(rt.kernel_keys().len(), 1);
        run(Command::new("cat").arg(&f));
        // the kernel reports root's read only with the shared value (no
        // condition): with `ownerOnly`'s value alone nothing would come
        let mut names: Vec<String> = alerts_until(&rt, 1)
            .into_iter()
            .map(|a| a.policy_name)
            .collect();
        names.sort();
        names.dedup();
        assert!(
            names.contains(&"second".to_string()),
            "root's read reported for the trap without a condition (conditioned first: {conditioned_first}): {names:?}"
        );
    }
}

#[test]
fn an_atomic_writer_symlink_swap_is_followed() {
    // the kubelet's atomic writer: file -> ..data/file, ..data -> ..v1; an
    // update writes ..v2 and swaps the ..data symlink
    let d = world_dir();
    let v1 = d.path().join("..v1");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(v1.join("token"), "one").expect("write");
    std::os::unix::fs::symlink("..v1", d.path().join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/token", d.path().join("token")).expect("symlink");
    let f = d.path().join("token");
    let rt = start(&host_policy(&f, ""));
    let first = key_of(&f);
    assert_eq!(rt.kernel_keys(), [first]);

    let v2 = d.path().join("..v2");
    std::fs::create_dir(&v2).expect("mkdir");
    std::fs::write(v2.join("token"), "two").expect("write");
    std::os::unix::fs::symlink("..v2", d.path().join("..data_tmp")).expect("symlink");
    run(Command::new("mv")
        .arg("-T")
        .arg(d.path().join("..data_tmp"))
        .arg(d.path().join("..data")));
    rt.rescan_now();
    let second = key_of(&f);
    assert_ne!(first, second);
    assert_eq!(
        sorted(rt.kernel_keys()),
        sorted(vec![first, second]),
        "the old version is armed until the writer removes it"
    );
    // the writer removes the old version: no tampering, the old inode let go
    std::fs::remove_dir_all(&v1).expect("rm ..v1");
    rt.rescan_now();
    assert_eq!(rt.kernel_keys(), [second]);
    run(Command::new("cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "one access, no tamper alert: {got:#?}");
    assert_eq!(got[0].metadata.inode, second.ino);
    assert_eq!(got[0].metadata.tamper, None);
}

#[test]
fn a_rate_limit_holds_back_alerts_and_the_next_one_counts_them() {
    let d = world_dir();
    let f = d.path().join("noisy");
    std::fs::write(&f, "x").expect("write");
    let rt = start(&host_policy(&f, "    rateLimit: {alerts: 2, seconds: 1}\n"));
    // one process opens the file five times (a shell builtin redirection),
    // then waits for the test's go before the sixth
    let script = format!(
        "for i in 1 2 3 4 5; do read x < {f}; done; read go; read x < {f}",
        f = f.display()
    );
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let pid = sh.id();
    let mut got = alerts_until(&rt, 2);
    // the window opened at the first read, before now: wait out one full
    // window from now on the kernel's clock (the events' timestamps)
    let window_end = boottime_ns() + 1_000_000_000;
    support::wait_until("the rate-limit window is over", || {
        boottime_ns() > window_end
    });
    sh.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("the go line");
    sh.wait().expect("sh exits");
    got.extend(alerts_until(&rt, 1));
    assert_eq!(
        got.len(),
        3,
        "two in the first window, one in the next: {got:#?}"
    );
    assert!(got.iter().all(|a| a.process.tgid == pid));
    let suppressed: Vec<Option<u64>> = got.iter().map(|a| a.metadata.suppressed).collect();
    assert_eq!(suppressed, [None, None, Some(3)]);
    assert_eq!(rt.metrics().suppressed, 3);
    assert_eq!(
        rt.metrics().kernel.hits,
        6,
        "the kernel still saw every open"
    );
}

#[test]
fn process_details_are_right_for_short_lived_processes_every_time() {
    let d = world_dir();
    let f = d.path().join("secret.txt");
    std::fs::write(&f, "x").expect("write");
    let rt = start(&host_policy(&f, ""));
    let cat = std::fs::canonicalize("/bin/cat").expect("cat");
    let me = std::env::current_exe().expect("test binary");
    let mut pids = Vec::new();
    for _ in 0..50 {
        let (pid, out) = run(Command::new("cat").arg(&f).current_dir(d.path()));
        assert!(out.status.success());
        pids.push(pid);
    }
    let got = alerts_until(&rt, 50);
    assert_eq!(got.len(), 50, "one alert per cat");
    for (a, pid) in got.iter().zip(&pids) {
        assert_eq!(a.process.tgid, *pid);
        assert_eq!(a.process.binary, cat.display().to_string(), "{a:?}");
        assert_eq!(a.process.arguments, format!("cat {}", f.display()));
        assert_eq!(a.process.cwd, d.path().display().to_string());
        assert_eq!(a.process.ppid, Some(std::process::id()));
        assert_eq!(a.process.parent_binary, me.display().to_string());
        assert_eq!(a.process.ns_pid, Some(*pid), "host pid namespace");
    }
}

#[test]
fn a_full_trap_map_leaves_the_entry_pending_with_the_reason() {
    support::ensure_mounts();
    let d = world_dir();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::write(&a, "a").expect("write");
    std::fs::write(&b, "b").expect("write");
    let mut traps = host_policy(&a, "");
    traps.extend(host_policy(&b, ""));
    let mut cfg = config();
    cfg.engine.max_traps = 1;
    let (rt, report) = Runtime::start(&cfg, &traps).unwrap_or_else(|e| panic!("runtime: {e}"));
    assert_eq!(report.armed, 1, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let f = &report.failures[0];
    assert!(f.contains("rt") && f.contains("updating trap key"), "{f}");
    assert!(
        f.contains("the trap map is full"),
        "the refusal says why: {f}"
    );
    let m = rt.metrics();
    assert_eq!(
        (m.armed, m.pending),
        (1, 1),
        "the entry the kernel refused is not counted as armed"
    );
    assert_eq!(rt.kernel_keys().len(), 1);
    assert_eq!(
        (m.trap_map_capacity, m.trap_map_keys),
        (1, 1),
        "the map's capacity and fill are reported: {m:?}"
    );
    assert_eq!(m.trap_map_full, 1, "the refusal is counted: {m:?}");
    // every retry is refused again, and counted again
    rt.rescan_now();
    let m = rt.metrics();
    assert_eq!((m.armed, m.pending, m.trap_map_full), (1, 1, 2), "{m:?}");
}
