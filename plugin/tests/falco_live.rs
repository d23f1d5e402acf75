//! Live mode on this machine's kernel: a host trap on a temp file, `cat`
//! it, receive the event through the plugin (the built `libkive.so` via its
//! C symbols, and in-process via `falco_plugin_runner`), extract the
//! process and file fields. Needs root and eBPF: the tests fail, never
//! skip, when the engine cannot load.

mod falco_common;
#[path = "support/tiers.rs"]
mod tiers;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use falco_plugin::api::{ss_plugin_rc_SS_PLUGIN_SUCCESS, ss_plugin_rc_SS_PLUGIN_TIMEOUT};
use falco_plugin_runner::{ExtractedField, PluginRunner, ScapStatus};

use falco_common::{ensure_mounts, json_str, OwnedEvent, Plugin, Value};

/// How long an event that must come is waited for (generous for a slow guest).
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// Live tests count fds and threads: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hooks that report an open on `tier` (the trampoline tier attaches
/// `fmod_ret`, which can block, and `fentry`).
fn open_hooks(tier: kive::trap::Tier) -> &'static [&'static str] {
    use kive::trap::Tier;
    match tier {
        Tier::Lsm => &["lsm/file_open"],
        Tier::Trampoline => &["fmod_ret/security_file_open", "fentry/security_file_open"],
        Tier::Fentry => &["fentry/security_file_open"],
        Tier::Tracepoint => &["tp_btf/sys_exit"],
        Tier::TracepointClassic => &["tracepoint/sys_exit_open"],
        Tier::Fanotify => &["fanotify/open_perm"],
    }
}

fn live_config(trap: &Path, extra: &str) -> String {
    let policy = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: falco-live, namespace: test}}\nspec:\n  traps:\n  - path: {}\n    metadata: {{severity: high}}\n    matchAny: [{{host: true}}]\n",
        trap.display()
    );
    format!(
        r#"{{"mode":"live","policies":{},"nodeName":"falco-test-node","rescanMs":200{extra}}}"#,
        json_str(&policy)
    )
}

fn trap_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = dir.path().join("decoy-credentials");
    std::fs::write(&f, "aws_secret_access_key=decoy\n").expect("write decoy");
    (dir, f)
}

/// Runs `cat path` and returns its pid.
fn cat(path: &Path) -> u32 {
    let child = Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn cat");
    let pid = child.id();
    let out = child.wait_with_output().expect("cat runs");
    assert!(out.status.success());
    pid
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fds").count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("tasks").count()
}

/// Open fds and threads once they stop changing (what a close released on
/// other threads is gone): the baseline a leak is measured against.
fn settled() -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (open_fds(), threads());
    let mut same = 0;
    while same < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = (open_fds(), threads());
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Waits until fds and threads are back to at most `base`, then asserts it.
fn assert_released(base: (usize, usize), what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (open_fds() > base.0 || threads() > base.1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (fds, tasks) = (open_fds(), threads());
    assert!(fds <= base.0, "{what}: {fds} fds open, {} before", base.0);
    assert!(
        tasks <= base.1,
        "{what}: {tasks} threads, {} before",
        base.1
    );
}

/// Events from next_batch until `pred` matches one, within `wait`.
fn wait_for(
    inst: &falco_common::Instance<'_>,
    wait: Duration,
    mut pred: impl FnMut(&OwnedEvent) -> bool,
) -> Option<OwnedEvent> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let (rc, evts) = inst.next_batch();
        if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS {
            assert!(!evts.is_empty(), "success with 0 events");
            for e in evts {
                assert_eq!(e.event_type(), 322);
                assert_eq!(e.nparams(), 2);
                assert_eq!(e.plugin_id(), 999);
                if pred(&e) {
                    return Some(e);
                }
            }
        } else {
            assert_eq!(
                rc,
                ss_plugin_rc_SS_PLUGIN_TIMEOUT,
                "live next_batch: {}",
                inst.plugin.last_error()
            );
            assert!(evts.is_empty());
        }
    }
    None
}

#[test]
fn live_cat_of_a_trapped_file_through_the_built_so() {
    let _g = serial();
    ensure_mounts();
    let (_dir, trap) = trap_file();
    let p = Plugin::init(&live_config(&trap, "")).expect("init");
    let inst = p
        .open(None)
        .unwrap_or_else(|e| panic!("live mode must start on this machine (root, eBPF): {e}"));
    assert_eq!(p.metric("armed_traps"), 1);
    let best = tiers::offer().best();
    assert_eq!(
        p.metric("active_tier"),
        kive::falco::tier_code(Some(best)),
        "the best tier this kernel offers: {best}"
    );

    // nothing touches the file yet: a timeout, promptly, with no event
    let t = Instant::now();
    let (rc, evts) = inst.next_batch();
    let took = t.elapsed();
    assert_eq!(
        rc, ss_plugin_rc_SS_PLUGIN_TIMEOUT,
        "no event → timeout, never Ok with 0 events"
    );
    assert!(evts.is_empty());
    // it returns: batchTimeoutMs is at most 100 ms, so a call that takes
    // seconds is blocking (a generous bound, not a race with the timeout)
    assert!(took < Duration::from_secs(5), "next_batch blocked {took:?}");

    let pid = cat(&trap);
    let e = wait_for(&inst, EVENT_WAIT, |e| {
        p.extract(e.as_ptr(), "kive.process.pid") == Ok(Value::U64(pid as u64))
    })
    .unwrap_or_else(|| panic!("no event for cat (pid {pid}) within 10 s"));
    let get = |f: &str| {
        p.extract(e.as_ptr(), f)
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}: {}", p.last_error()))
    };
    assert_eq!(get("kive.process.comm"), Value::s("cat"));
    assert_eq!(get("kive.process.tgid"), Value::U64(pid as u64));
    assert_eq!(get("kive.path"), Value::s(trap.to_str().expect("utf8")));
    assert_eq!(
        get("kive.trap.path"),
        Value::s(trap.to_str().expect("utf8"))
    );
    assert_eq!(get("kive.mask"), Value::U64(36), "open + read");
    assert_eq!(get("kive.access"), Value::s("read"));
    assert_eq!(get("kive.owner"), Value::s("host"));
    let hook = get("kive.hook");
    assert!(
        open_hooks(tiers::offer().best())
            .iter()
            .any(|h| hook == Value::s(h)),
        "an open on the best tier this kernel offers: {hook:?}"
    );
    assert_eq!(get("kive.node.name"), Value::s("falco-test-node"));
    assert_eq!(get("kive.policy.name"), Value::s("falco-live"));
    assert_eq!(get("kive.metadata[severity]"), Value::s("high"));
    assert_eq!(get("kive.pod.name"), Value::None, "a host trap has no pod");
    assert_eq!(get("kive.process.uid"), Value::U64(0));
    assert_eq!(
        get("kive.accessor.host"),
        Value::Bool(true),
        "cat runs on the node"
    );
    assert_eq!(
        get("kive.accessor.foreign"),
        Value::Bool(false),
        "a host process on a host trap"
    );
    let Value::U64(cg) = get("kive.cgroup.id") else {
        panic!("cgroup id is a number");
    };
    assert!(cg > 0);
    // the engine captures the executable at the access (cat is gone long
    // before /proc could be read)
    let cat_exe = std::fs::canonicalize(
        std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
            .map(|d| d.join("cat"))
            .find(|p| p.exists())
            .expect("cat on PATH"),
    )
    .expect("canonical cat");
    assert_eq!(
        get("kive.process.binary"),
        Value::s(cat_exe.to_str().expect("utf8"))
    );
    assert_eq!(
        get("kive.process.args"),
        Value::s(&format!("cat {}", trap.display()))
    );
    let metadata = std::fs::metadata(&trap).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(get("kive.inode"), Value::U64(metadata.ino()));
    // the event time is the access's wall-clock time
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_nanos() as u64;
    assert!(
        now.abs_diff(e.ts()) < 30_000_000_000,
        "ts {} vs now {now}",
        e.ts()
    );
    assert!(p.metric("events_delivered") >= 1);
    assert_eq!(p.metric("kernel_ring_drops"), 0);
    assert_eq!(p.metric("queue_drops"), 0);
    assert!(p.metric("kernel_hits") >= 1);
    let text = p.event_to_string(e.as_ptr());
    assert!(
        text.contains("comm=cat") && text.contains("access=read"),
        "{text}"
    );
}

#[test]
fn rate_limit_and_a_dead_callback_show_in_the_metrics_and_never_hold_events() {
    let _g = serial();
    ensure_mounts();
    let (_dir, trap) = trap_file();
    // a port nobody listens on: every delivery attempt is refused
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let url = format!("http://{}/alerts", dead.local_addr().expect("addr"));
    drop(dead);
    let policy = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: limited, namespace: test}}\nspec:\n  traps:\n  - path: {}\n    callback: {url}\n    rateLimit: {{alerts: 1, seconds: 60}}\n    matchAny: [{{host: true}}]\n",
        trap.display()
    );
    let cfg = format!(
        r#"{{"mode":"live","callbackAllowLoopback":true,"policies":{}}}"#,
        json_str(&policy)
    );
    let p = Plugin::init(&cfg).expect("init");
    let inst = p.open(None).expect("live open");
    for m in [
        "rate_limit_suppressed",
        "callbacks_delivered",
        "callbacks_failed",
        "callbacks_retries",
        "callbacks_dropped",
    ] {
        assert_eq!(p.metric(m), 0, "{m} starts at 0");
    }
    // one process opens the trap three times (a shell builtin redirection)
    let script = format!("for i in 1 2 3; do read x < {}; done", trap.display());
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("sh runs");
    assert!(out.status.success());
    let first = wait_for(&inst, Duration::from_secs(30), |_| true);
    assert!(
        first.is_some(),
        "the first access is an event despite the dead callback"
    );
    // 5 attempts, 100 ms doubling: the callback gives up after about 1.5 s;
    // an event held until then would arrive with the failure counted
    assert_eq!(
        p.metric("callbacks_failed"),
        0,
        "the event came while its callback was still being retried"
    );
    // the other two accesses are held back by the rate limit: counted, no event
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.metric("rate_limit_suppressed") < 2 {
        assert!(Instant::now() < deadline, "two accesses suppressed");
        let (_, evts) = inst.next_batch();
        assert!(evts.is_empty(), "a rate-limited access became an event");
    }
    assert_eq!(p.metric("rate_limit_suppressed"), 2);
    assert_eq!(
        p.metric("rate_limit_windows"),
        1,
        "one (trap, process) window held, and it is visible"
    );
    assert!(
        p.metric("open_fds") > 0 && p.metric("fd_limit") >= p.metric("open_fds"),
        "fd usage {} under the limit {}",
        p.metric("open_fds"),
        p.metric("fd_limit")
    );
    // the whole process (Falco's test runner included): at least kive's maps
    assert!(
        p.metric("rss_bytes") > 1024 * 1024,
        "rss_bytes {} is the process's resident memory",
        p.metric("rss_bytes")
    );
    // 5 attempts, 100 ms doubling: given up after about 1.5 s
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.metric("callbacks_failed") == 0 && Instant::now() < deadline {
        let _ = inst.next_batch();
    }
    assert_eq!(p.metric("callbacks_failed"), 1, "given up and counted");
    assert_eq!(p.metric("callbacks_retries"), 4, "retried before giving up");
    assert_eq!(p.metric("callbacks_delivered"), 0);
}

#[test]
fn live_open_params_select_live_and_close_detaches() {
    let _g = serial();
    ensure_mounts();
    let (_dir, trap) = trap_file();
    // init_config says replay; open_params "live" overrides it
    let cfg = live_config(&trap, "").replace(
        r#""mode":"live""#,
        r#""mode":"replay","replayFile":"/nonexistent""#,
    );
    let p = Plugin::init(&cfg).expect("init");
    let inst = p.open(Some("live")).expect("live via open_params");
    assert_eq!(p.metric("armed_traps"), 1);
    let pid = cat(&trap);
    assert!(
        wait_for(&inst, EVENT_WAIT, |e| {
            p.extract(e.as_ptr(), "kive.process.pid") == Ok(Value::U64(pid as u64))
        })
        .is_some(),
        "event for cat {pid}"
    );
    drop(inst);
    assert_eq!(p.metric("armed_traps"), 0, "closed: no runtime");
    assert_eq!(p.metric("active_tier"), 0);
}

#[test]
fn live_open_close_cycles_leak_nothing() {
    let _g = serial();
    ensure_mounts();
    let (_dir, trap) = trap_file();
    let p = Plugin::init(&live_config(&trap, "")).expect("init");
    // warm up once (lazy statics, logger, libbpf's first-use state)
    drop(p.open(None).expect("open"));
    let base = settled();
    for i in 0..5 {
        let inst = p.open(None).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let pid = cat(&trap);
        assert!(
            wait_for(&inst, EVENT_WAIT, |e| {
                p.extract(e.as_ptr(), "kive.process.pid") == Ok(Value::U64(pid as u64))
            })
            .is_some(),
            "cycle {i}: event for cat {pid}"
        );
        drop(inst);
    }
    assert_released(base, "after 5 live open/close cycles");
}

#[test]
fn live_mode_through_the_runner() {
    let _g = serial();
    ensure_mounts();
    let (_dir, trap) = trap_file();
    let mut r = PluginRunner::new();
    let cfg = std::ffi::CString::new(live_config(&trap, r#","batchTimeoutMs":20"#)).expect("cstr");
    r.register_plugin(&kive::PLUGIN_API, &cfg)
        .expect("register");
    let mut r = r
        .start_capture()
        .unwrap_or_else(|e| panic!("live mode must start on this machine: {e:#}"));
    let pid = cat(&trap);
    let deadline = Instant::now() + EVENT_WAIT;
    let ev = loop {
        assert!(Instant::now() < deadline, "no event for cat {pid}");
        match r.next_event() {
            Ok(ev) => {
                let got = r
                    .extract_field(&ev, "kive.process.pid")
                    .expect("known")
                    .expect("ok");
                if got == ExtractedField::U64(pid as u64) {
                    break ev;
                }
            }
            Err(e) if e.downcast_ref::<ScapStatus>() == Some(&ScapStatus::Timeout) => {}
            Err(e) => panic!("next_event: {e:#}"),
        }
    };
    let comm = r
        .extract_field(&ev, "kive.process.comm")
        .expect("known")
        .expect("ok");
    assert_eq!(comm, ExtractedField::String(c"cat".into()));
    let metrics = r.get_metrics();
    let armed = metrics
        .iter()
        .find(|m| m.name == "kive.armed_traps")
        .expect("armed_traps metric");
    assert_eq!(armed.value, falco_plugin_runner::MetricValue::U64(1));
    r.stop_capture().expect("close");
}

/// Close right after an open that armed 2,000 traps, while the rescan
/// thread (every 10 ms) is going through them: close returns, every pin
/// (fd), thread and armed trap is released, and the next open arms them
/// all again and reports an access.
#[test]
fn close_right_after_arming_thousands_of_traps_releases_everything() {
    const TRAPS: usize = 2000;
    let _g = serial();
    ensure_mounts();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut policy = String::from(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: many, namespace: test}\nspec:\n  traps:\n",
    );
    let files: Vec<_> = (0..TRAPS)
        .map(|i| dir.path().join(format!("f{i:04}")))
        .collect();
    for f in &files {
        policy.push_str(&format!(
            "  - path: {}\n    create: true\n    matchAny: [{{host: true}}]\n",
            f.display()
        ));
    }
    let cfg = format!(
        r#"{{"mode":"live","policies":{},"nodeName":"falco-test-node","rescanMs":10}}"#,
        json_str(&policy)
    );
    let p = Plugin::init(&cfg).expect("init");
    // warm up once (lazy statics, logger, libbpf's first-use state)
    drop(p.open(None).expect("open"));
    let base = settled();
    let inst = p.open(None).expect("open");
    assert_eq!(p.metric("armed_traps"), TRAPS as u64, "every trap armed");
    drop(inst);
    assert_eq!(p.metric("armed_traps"), 0, "closed: nothing armed");
    assert_released(
        base,
        "closed right after arming: every pin released, every thread ended",
    );
    let inst = p.open(None).expect("open again");
    assert_eq!(p.metric("armed_traps"), TRAPS as u64, "armed again");
    let last = &files[TRAPS - 1];
    let pid = cat(last);
    assert!(
        wait_for(&inst, EVENT_WAIT, |e| {
            p.extract(e.as_ptr(), "kive.process.pid") == Ok(Value::U64(pid as u64))
        })
        .is_some(),
        "event for cat {pid}"
    );
}
