//! Events per second through the plugin's C ABI, the way Falco drives it:
//! the built `libkive.so` (target/release) loaded with dlopen,
//! `plugin_next_batch` until the batch is consumed, then
//! `plugin_extract_fields` for 10 typical fields of every event.
//!
//! - replay: a temp file of KiveAlert JSON lines (the recorded ones in
//!   test_files/, repeated), read to EOF;
//! - live: a host trap on a temp file and a thread opening and closing it
//!   in a loop for a few seconds (needs root and eBPF).
//!
//! Prints a table: mode, events, seconds, events/s, kernel ring drops,
//! queue drops, and the method. `cargo bench --bench plugin_throughput`.

#[path = "../tests/falco_common/mod.rs"]
mod falco_common;

use std::ffi::CString;
use std::io::Write;
use std::ptr;
use std::time::{Duration, Instant};

use falco_common::{json_str, test_file, Fields, Plugin, So};
use falco_plugin::api::{
    ss_plugin_event, ss_plugin_event_input, ss_plugin_extract_field,
    ss_plugin_extract_field__bindgen_ty_1, ss_plugin_field_extract_input,
    ss_plugin_rc_SS_PLUGIN_EOF, ss_plugin_rc_SS_PLUGIN_SUCCESS, ss_plugin_rc_SS_PLUGIN_TIMEOUT,
    ss_plugin_table_reader_vtable_ext,
};

/// The fields a typical rule + output reads.
const FIELDS: [&str; 10] = [
    "kive.policy.name",
    "kive.path",
    "kive.access",
    "kive.action",
    "kive.process.pid",
    "kive.process.comm",
    "kive.process.binary",
    "kive.pod.name",
    "kive.node.name",
    "kive.mask",
];

struct Extractor {
    names: Vec<CString>,
    reqs: Vec<ss_plugin_extract_field>,
    reader_ext: Box<ss_plugin_table_reader_vtable_ext>,
    /// The event number, one per event as libsinsp numbers them (kive
    /// keeps an event's values until the number changes).
    evtnum: u64,
}

impl Extractor {
    fn new() -> Self {
        let all = Fields::get();
        let names: Vec<CString> = FIELDS
            .iter()
            .map(|f| CString::new(*f).expect("cstr"))
            .collect();
        let reqs = FIELDS
            .iter()
            .zip(&names)
            .map(|(f, c)| {
                let (id, info) = all
                    .iter()
                    .enumerate()
                    .find(|(_, i)| i.name == *f)
                    .unwrap_or_else(|| panic!("field {f}"));
                ss_plugin_extract_field {
                    res: ss_plugin_extract_field__bindgen_ty_1 {
                        u64_: ptr::null_mut(),
                    },
                    res_len: 0,
                    field_id: id as u32,
                    field: c.as_ptr(),
                    arg_key: ptr::null(),
                    arg_index: 0,
                    arg_present: 0,
                    ftype: if info.ty == "uint64" { 8 } else { 9 },
                    flist: 0,
                }
            })
            .collect();
        Self {
            names,
            reqs,
            evtnum: 0,
            // SAFETY: an all-None vtable (kive reads no table).
            reader_ext: Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// Extracts the 10 fields of one event, one field per call (as
    /// libsinsp's filterchecks do); returns how many had a value.
    fn extract(&mut self, p: &Plugin, evt: *const ss_plugin_event) -> usize {
        self.evtnum += 1;
        let ev_in = ss_plugin_event_input {
            evt,
            evtnum: self.evtnum,
            evtsrc: c"kive".as_ptr(),
        };
        let mut with_value = 0;
        for req in self.reqs.iter_mut() {
            let input = ss_plugin_field_extract_input {
                owner: ptr::null_mut(),
                get_owner_last_error: None,
                num_fields: 1,
                fields: req,
                // SAFETY: all-None vtable.
                table_reader: unsafe { std::mem::zeroed() },
                table_reader_ext: &mut *self.reader_ext,
                value_offsets: ptr::null_mut(),
            };
            // SAFETY: valid plugin and an event of the current batch.
            let rc = unsafe { (p.so.extract_fields)(p.ptr, &ev_in, &input) };
            assert_eq!(rc, 0, "extract {:?}: {}", self.names, p.last_error());
            with_value += (req.res_len > 0) as usize;
        }
        with_value
    }
}

struct Row {
    mode: &'static str,
    events: u64,
    secs: f64,
    ring_drops: u64,
    queue_drops: u64,
    /// This process's CPU (every kive thread + the consumer) per event, µs.
    cpu_us: Option<f64>,
    /// Of which the rescan thread's (kive-rescan), µs per event.
    rescan_us: Option<f64>,
    /// access → next_batch latency p50 and p99, ms.
    latency_ms: Option<(f64, f64)>,
    note: String,
}

thread_local! {
    /// Latencies (ns) of the events next_batch returned, when recording.
    static LATENCIES: std::cell::RefCell<Option<Vec<u64>>> = const { std::cell::RefCell::new(None) };
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn process_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU time (ns) of this process's threads named `name`, by thread id
/// (`/proc/self/task/<tid>/schedstat`, its first field: time on a CPU).
fn threads_cpu_ns(name: &str) -> std::collections::HashMap<u64, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let (Some(tid), Some(ns)) = (
            t.file_name().to_str().and_then(|s| s.parse().ok()),
            stat.split_whitespace().next().and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        out.insert(tid, ns);
    }
    out
}

/// CPU the threads named `name` used since `before`.
fn threads_cpu_since(name: &str, before: &std::collections::HashMap<u64, u64>) -> u64 {
    threads_cpu_ns(name)
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// Drains one next_batch; returns the rc and the number of events.
fn batch(p: &Plugin, inst: &falco_common::Instance<'_>, ex: Option<&mut Extractor>) -> (i32, u64) {
    let mut n = 0u32;
    let mut evts: *mut *mut ss_plugin_event = ptr::null_mut();
    // SAFETY: valid plugin and instance, out pointers.
    let rc = unsafe { (p.so.next_batch)(p.ptr, inst.ptr, &mut n, &mut evts) };
    if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS {
        assert!(n > 0, "success with an empty batch");
        let now = wall_ns();
        LATENCIES.with(|l| {
            if let Some(v) = l.borrow_mut().as_mut() {
                for i in 0..n as usize {
                    // SAFETY: evts holds n event pointers valid until the next call.
                    let ts = unsafe { (**evts.add(i)).ts };
                    if ts != u64::MAX {
                        v.push(now.saturating_sub(ts));
                    }
                }
            }
        });
        if let Some(ex) = ex {
            for i in 0..n as usize {
                // SAFETY: evts holds n event pointers valid until the next call.
                let e = unsafe { *evts.add(i) };
                std::hint::black_box(ex.extract(p, e));
            }
        }
    }
    (rc, n as u64)
}

fn replay_file(lines: usize) -> tempfile::NamedTempFile {
    let mut src = Vec::new();
    for name in ["kive_alerts.jsonl", "kive_run_host.jsonl"] {
        let text = std::fs::read_to_string(test_file(name)).expect("test file");
        src.extend(text.lines().map(str::to_string));
    }
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    let mut w = std::io::BufWriter::new(f.as_file_mut());
    for i in 0..lines {
        writeln!(w, "{}", src[i % src.len()]).expect("write");
    }
    drop(w);
    f
}

fn replay_plugin(
    lines: usize,
    batch_size: usize,
) -> (falco_common::Plugin, tempfile::NamedTempFile) {
    let file = replay_file(lines);
    let cfg = format!(
        r#"{{"mode":"replay","replayFile":{},"batchSize":{batch_size}}}"#,
        json_str(file.path().to_str().expect("utf8"))
    );
    (Plugin::init(&cfg).expect("init"), file)
}

/// Replays a file to EOF; returns (events, seconds).
fn drain(p: &Plugin, inst: &falco_common::Instance<'_>, ex: &mut Extractor) -> (u64, f64) {
    let t = Instant::now();
    let mut events = 0;
    loop {
        let (rc, n) = batch(p, inst, Some(&mut *ex));
        events += n;
        if rc == ss_plugin_rc_SS_PLUGIN_EOF {
            break;
        }
        assert!(
            rc == ss_plugin_rc_SS_PLUGIN_SUCCESS || rc == ss_plugin_rc_SS_PLUGIN_TIMEOUT,
            "{}",
            p.last_error()
        );
    }
    (events, t.elapsed().as_secs_f64())
}

/// End to end: the read-ahead thread parses JSON while next_batch and the
/// extraction run.
fn replay_end_to_end(lines: usize) -> Row {
    let (p, _file) = replay_plugin(lines, 1024);
    let inst = p.open(None).expect("open");
    let mut ex = Extractor::new();
    let (events, secs) = drain(&p, &inst, &mut ex);
    assert_eq!(events, lines as u64);
    Row {
        mode: "replay, end to end",
        events,
        secs,
        ring_drops: 0,
        queue_drops: 0,
        cpu_us: None,
        rescan_us: None,
        latency_ms: None,
        note: format!(
            "{lines} JSON lines from a file: parsed on the read-ahead thread while next_batch + extraction run (JSON parsing bounds it)"
        ),
    }
}

/// The plugin path alone: the file is fully parsed by the read-ahead
/// thread before the clock starts (it fits in the read-ahead queue).
fn replay_plugin_path(rounds: usize) -> Row {
    let lines = 16 * 512;
    let (p, _file) = replay_plugin(lines, 512);
    let mut ex = Extractor::new();
    let (mut events, mut secs) = (0, 0.0);
    for _ in 0..rounds {
        let inst = p.open(None).expect("open");
        // wait until the whole file is parsed and queued
        let t = Instant::now();
        loop {
            let mut pct = 0u32;
            // SAFETY: valid plugin and instance.
            unsafe { (p.so.get_progress)(p.ptr, inst.ptr, &mut pct) };
            if pct >= 10_000 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "read-ahead stalled at {pct}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        let (e, s) = drain(&p, &inst, &mut ex);
        assert_eq!(e, lines as u64);
        events += e;
        secs += s;
    }
    Row {
        mode: "replay, plugin path",
        events,
        secs,
        ring_drops: 0,
        queue_drops: 0,
        cpu_us: None,
        rescan_us: None,
        latency_ms: None,
        note: format!(
            "{rounds} × {lines} lines already parsed by the read-ahead thread: next_batch (batches of 512) + extraction only"
        ),
    }
}

/// The 10 extractions alone: one batch of replayed events (valid until
/// the next next_batch call) extracted `rounds` times over, each time
/// under new event numbers (`--only=extraction`, never in the default run).
fn replay_extraction(rounds: usize) -> Row {
    let lines = 512;
    let (p, _file) = replay_plugin(lines, lines);
    let inst = p.open(None).expect("open");
    let mut ex = Extractor::new();
    let t = Instant::now();
    let (n, evts) = loop {
        let mut n = 0u32;
        let mut evts: *mut *mut ss_plugin_event = ptr::null_mut();
        // SAFETY: valid plugin and instance, out pointers.
        let rc = unsafe { (p.so.next_batch)(p.ptr, inst.ptr, &mut n, &mut evts) };
        if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS && n > 0 {
            break (n as usize, evts);
        }
        assert!(
            rc == ss_plugin_rc_SS_PLUGIN_TIMEOUT && t.elapsed() < Duration::from_secs(30),
            "no batch: rc {rc}: {}",
            p.last_error()
        );
    };
    // SAFETY: evts holds n event pointers valid until the next call.
    let evts: Vec<*const ss_plugin_event> = (0..n)
        .map(|i| unsafe { *evts.add(i) }.cast_const())
        .collect();
    let t = Instant::now();
    for _ in 0..rounds {
        for &e in &evts {
            std::hint::black_box(ex.extract(&p, e));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let events = (rounds * n) as u64;
    Row {
        mode: "replay, extraction only",
        events,
        secs,
        ring_drops: 0,
        queue_drops: 0,
        cpu_us: Some(secs * 1e6 / events as f64),
        rescan_us: None,
        latency_ms: None,
        note: format!(
            "{rounds} × one batch of {n} events: the 10 fields of each, one plugin_extract_fields call per field, a new event number each time (CPU column: wall time per event, one thread)"
        ),
    }
}

/// The opener child: opens and closes `path` until `secs` pass (the engine
/// ignores the plugin's own process, so the load comes from another one).
fn opener(path: &str, secs: f64, rate: f64) {
    let t = Instant::now();
    let mut n = 0u64;
    if rate > 0.0 {
        // paced: one open every 1/rate s (latency without a backlog)
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut next = Instant::now();
        while t.elapsed().as_secs_f64() < secs {
            drop(std::fs::File::open(path).expect("open trap"));
            n += 1;
            next += period;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        println!("{n}");
        return;
    }
    while t.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            drop(std::fs::File::open(path).expect("open trap"));
        }
        n += 1000;
    }
    println!("{n}");
}

/// One live row: `flood_limit` is the kernel's per-(trap, process) limit
/// (events/s; `None` = kive's default, 0 = off).
fn live(mode: &'static str, secs: f64, rate: f64, tier: &str, flood_limit: Option<u32>) -> Row {
    falco_common::ensure_mounts();
    let dir = tempfile::tempdir().expect("dir");
    let trap = dir.path().join("bench-decoy");
    std::fs::write(&trap, "decoy\n").expect("write");
    let policy = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  traps:\n  - path: {}\n    matchAny: [{{host: true}}]\n",
        trap.display()
    );
    let cfg = format!(
        r#"{{"mode":"live","tier":"{tier}","policies":{},"batchSize":1024,"queueCapacity":262144{}}}"#,
        json_str(&policy),
        flood_limit.map_or(String::new(), |n| format!(r#","floodLimit":{n}"#))
    );
    let p = Plugin::init(&cfg).expect("init");
    let inst = p
        .open(None)
        .unwrap_or_else(|e| panic!("live mode needs root and eBPF: {e}"));
    let mut ex = Extractor::new();
    let child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--opener",
            trap.to_str().expect("utf8"),
            &secs.to_string(),
            &rate.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the opener");
    LATENCIES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let rescan0 = threads_cpu_ns("kive-rescan");
    let cpu0 = process_cpu_ns();
    let t = Instant::now();
    let mut events = 0;
    while t.elapsed().as_secs_f64() < secs + 0.2 {
        let (rc, n) = batch(&p, &inst, Some(&mut ex));
        assert!(
            rc == ss_plugin_rc_SS_PLUGIN_SUCCESS || rc == ss_plugin_rc_SS_PLUGIN_TIMEOUT,
            "{}",
            p.last_error()
        );
        events += n;
    }
    let out = child.wait_with_output().expect("opener");
    let opened: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("opener count");
    // drain what is queued: until every hit is delivered or held back
    // (loss reports, events of their own, may make it more), or 2 s pass
    // without an event
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(2)
        && events + p.metric("kernel_flood_limited") < p.metric("kernel_hits")
    {
        let (rc, n) = batch(&p, &inst, Some(&mut ex));
        if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS {
            idle = Instant::now();
        }
        events += n;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = process_cpu_ns() - cpu0;
    let rescan = threads_cpu_since("kive-rescan", &rescan0);
    let mut lat = LATENCIES
        .with(|l| l.borrow_mut().take())
        .unwrap_or_default();
    lat.sort_unstable();
    let hits = p.metric("kernel_hits");
    let limited = p.metric("kernel_flood_limited");
    Row {
        mode,
        events,
        secs: elapsed,
        ring_drops: p.metric("kernel_ring_drops"),
        queue_drops: p.metric("queue_drops"),
        cpu_us: (events > 0).then(|| cpu as f64 / events as f64 / 1e3),
        rescan_us: (events > 0).then(|| rescan as f64 / events as f64 / 1e3),
        latency_ms: (!lat.is_empty())
            .then(|| (percentile(&lat, 0.5) / 1e6, percentile(&lat, 0.99) / 1e6)),
        note: format!(
            "another process opens+closes the trapped file {}: {opened} opens ({:.0}/s), {hits} kernel hits, {limited} held back by the flood limit ({}), {events} events ({}); tier {} (4 = tracepoint, 6 = fanotify)",
            if rate > 0.0 { format!("paced at {rate:.0}/s") } else { "as fast as it can".into() },
            opened as f64 / secs,
            match flood_limit {
                None => "default, 64/s per trap and process".to_string(),
                Some(0) => "off".to_string(),
                Some(n) => format!("{n}/s"),
            },
            if events + limited >= opened { "every open delivered or counted as held back; loss reports add events".to_string() } else { format!("{} not delivered", opened as i64 - events as i64 - limited as i64) },
            p.metric("active_tier")
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path, secs, rate] = args.as_slice() {
        if flag == "--opener" {
            opener(
                path,
                secs.parse().expect("seconds"),
                rate.parse().expect("rate"),
            );
            return;
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    // this binary is built with the bench profile: build the .so with it too
    falco_common::PROFILE
        .set("bench")
        .expect("profile set once");
    let _ = So::get();
    // --only=end-to-end|plugin-path|live runs one row (for profiling)
    let only = args.iter().find_map(|a| a.strip_prefix("--only="));
    let want = |name: &str| only.is_none_or(|o| o == name);
    let mut rows = Vec::new();
    if want("end-to-end") {
        rows.push(replay_end_to_end(if quick { 20_000 } else { 500_000 }));
    }
    if want("plugin-path") {
        rows.push(replay_plugin_path(if quick { 2 } else { 20 }));
    }
    // --only=extraction: the extraction calls alone (not in the default run)
    if only == Some("extraction") {
        rows.push(replay_extraction(if quick { 200 } else { 2000 }));
    }
    let secs = if quick { 1.0 } else { 3.0 };
    // --only=live runs the live rows; --only=live-tracepoint|live-fanotify one tier's
    let live_tier = |t: &str| want("live") || only == Some(&format!("live-{t}")[..]);
    if live_tier("tracepoint") {
        // the flood rows turn the kernel's flood limit off to measure kive's
        // cost at full rate; one row keeps it to show what it holds back
        let off = Some(0);
        rows.push(live(
            "live, flood (tracepoint)",
            secs,
            0.0,
            "tracepoint",
            off,
        ));
        rows.push(live(
            "live, flood, default flood limit (tracepoint)",
            secs,
            0.0,
            "tracepoint",
            None,
        ));
        rows.push(live(
            "live, paced (tracepoint)",
            secs,
            2000.0,
            "tracepoint",
            off,
        ));
    }
    if live_tier("fanotify") {
        let off = Some(0);
        rows.push(live("live, flood (fanotify)", secs, 0.0, "fanotify", off));
        rows.push(live(
            "live, paced (fanotify)",
            secs,
            2000.0,
            "fanotify",
            off,
        ));
    }
    println!();
    println!("kive plugin throughput (target/release/libkive.so through its C symbols: plugin_next_batch, then plugin_extract_fields once per field for 10 fields)");
    println!("fields: {}", FIELDS.join(", "));
    println!();
    println!("| mode | events | seconds | events/s | kive CPU µs/event | of which rescan thread | access→next_batch p50 / p99 | ring drops | queue drops | method |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.3} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            r.cpu_us.map_or("–".into(), |c| format!("{c:.2}")),
            r.rescan_us.map_or("–".into(), |c| format!("{c:.2}")),
            r.latency_ms
                .map_or("–".into(), |(a, b)| format!("{a:.3} / {b:.3} ms")),
            r.ring_drops,
            r.queue_drops,
            r.note
        );
    }
    println!();
    println!("kive CPU µs/event: this process's CPU time (CLOCK_PROCESS_CPUTIME_ID: the engine's reader, the rescan thread and the consumer calling next_batch + 10 extractions; not the opener, another process) over the live run / events delivered: an upper bound of kive's own cost per event. Latency: wall clock at next_batch's return − the event's timestamp (the access, from the kernel's boot-time clock), every event.");
}
