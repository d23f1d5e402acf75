//! Table 2: event throughput, a child opening the trapped file in a tight
//! loop while the ring reader counts what it receives.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kive::trap::{EngineConfig, RawEvent, Tier, TierChoice};

use super::open_loop::{median, monotonic_ns, spawn_open_loop, Rng};
use super::quiet::{tries, wait_quiet, watched};
use super::{load_armed, progress, tier_label, Files};

struct Throughput {
    child_rate: f64,
    recv_rate: f64,
    received: u64,
    hits: u64,
    drops: u64,
}

fn measure_throughput(
    choice: TierChoice,
    wakeup_bytes: u64,
    files: &Files,
    events: u64,
    rng: &mut Rng,
) -> Result<(Throughput, usize), String> {
    let mut engine = load_armed(choice, 1, wakeup_bytes, files, rng)?;
    let received = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    let (r, l, key) = (
        Arc::clone(&received),
        Arc::clone(&last_ns),
        files.bench.trapped_key,
    );
    engine
        .start_reader(Duration::from_millis(10), move |data| {
            // decode (as the runtime does), nothing slower on the ring thread
            if matches!(RawEvent::decode(data), Ok(ev) if ev.key == key) {
                r.fetch_add(1, Ordering::Relaxed);
                l.store(monotonic_ns(), Ordering::Relaxed);
            }
        })
        .map_err(|e| e.to_string())?;
    let ours = engine.programs().len();
    let (run, foreign) = watched(ours, || -> Result<(u64, u64), String> {
        let t = spawn_open_loop(&files.bench.trapped, events, 0, false)?;
        let (start, end) = (t.start, t.end);
        // drain: until every counted hit is received or dropped, or no progress
        let mut last = (u64::MAX, Instant::now());
        loop {
            let s = engine.kernel_stats();
            let got = received.load(Ordering::Relaxed);
            if got + s.drops >= s.hits {
                break;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((start, end))
    });
    let (start, end) = run?;
    let s = engine.kernel_stats();
    engine.stop_reader();
    let got = received.load(Ordering::Relaxed);
    let last = last_ns.load(Ordering::Relaxed);
    let child_rate = events as f64 / ((end - start) as f64 / 1e9);
    let recv_rate = if got > 0 && last > start {
        got as f64 / ((last - start) as f64 / 1e9)
    } else {
        0.0
    };
    Ok((
        Throughput {
            child_rate,
            recv_rate,
            received: got,
            hits: s.hits,
            drops: s.drops,
        },
        foreign,
    ))
}

/// Table 2. Returns the table and how many measurements saw foreign links.
pub(super) fn throughput_table(
    loadable: &[(TierChoice, Tier)],
    files: &Files,
    events: u64,
    rounds: usize,
    base_wall: Option<f64>,
) -> Result<(String, usize), String> {
    let default_wakeup = EngineConfig::default().wakeup_bytes;
    let mut configs: Vec<(String, TierChoice, u64)> = Vec::new();
    let mut fanotify_rows = HashSet::new();
    for &(t, got) in loadable {
        if got == Tier::Fanotify {
            // no ring buffer: every event is answered as it comes
            fanotify_rows.insert(configs.len());
            configs.push((tier_label(t, got), t, 0));
            continue;
        }
        for w in [0, default_wakeup] {
            configs.push((tier_label(t, got), t, w));
        }
    }
    let mut t = format!(
        "### event throughput: a child opens a trapped file {events} times ({rounds} interleaved rounds)\n\n"
    );
    if configs.is_empty() {
        t.push_str("No tier loads here: nothing to measure.\n");
        return Ok((t, 0));
    }
    let mut rng = Rng::new();
    let mut results: Vec<Vec<Throughput>> = (0..configs.len()).map(|_| Vec::new()).collect();
    let mut foreign_seen = 0usize;
    let n = configs.len();
    for round in 0..rounds {
        for i in 0..n {
            let idx = (i + round) % n;
            let (label, choice, w) = &configs[idx];
            let mut attempt = 1;
            let r = loop {
                wait_quiet(0);
                let (r, foreign) = measure_throughput(*choice, *w, files, events, &mut rng)?;
                if foreign == 0 {
                    break r;
                }
                if attempt == tries() {
                    foreign_seen += 1;
                    progress(format_args!(
                        "warning: {foreign} tracing link(s) of another process were attached during this measurement (kept after {} tries)", tries()
                    ));
                    break r;
                }
                progress(format_args!(
                    "{foreign} tracing link(s) of another process appeared during the measurement: measuring again"
                ));
                attempt += 1;
            };
            progress(format_args!(
                "round {}/{rounds}: {label:<24} wakeup {w:>6}: {:.0} events/s received, {} received, {} drops, {} hits",
                round + 1,
                r.recv_rate,
                r.received,
                r.drops,
                r.hits
            ));
            results[idx].push(r);
        }
    }
    t.push_str("| tier | reader wake-up | child opens/s (median) | events/s received (median) | wall µs per trapped open+close (median) | added to an untrapped open+close | received per run | kernel drops per run |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---|---|\n");
    for (i, (label, _, w)) in configs.iter().enumerate() {
        let rs = &results[i];
        let child = median(&rs.iter().map(|r| r.child_rate).collect::<Vec<_>>());
        let recv = median(&rs.iter().map(|r| r.recv_rate).collect::<Vec<_>>());
        let received = rs
            .iter()
            .map(|r| r.received.to_string())
            .collect::<Vec<_>>()
            .join(" / ");
        let drops = rs
            .iter()
            .map(|r| r.drops.to_string())
            .collect::<Vec<_>>()
            .join(" / ");
        let per_op_ns = 1e9 / child;
        let added = base_wall.map_or("–".to_string(), |b| {
            format!("{:+.1} µs", (per_op_ns - b) / 1e3)
        });
        let wake = if fanotify_rows.contains(&i) {
            "answers each open (permission event)".to_string()
        } else if *w == 0 {
            "every event (wakeup_bytes = 0)".to_string()
        } else {
            format!("past {} KiB filled (default)", w / 1024)
        };
        t.push_str(&format!(
            "| {label} | {wake} | {child:.0} | {recv:.0} | {:.2} | {added} | {received} | {drops} |\n",
            per_op_ns / 1e3
        ));
    }
    Ok((t, foreign_seen))
}
