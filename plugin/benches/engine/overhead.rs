//! Table 1: open+close of an untrapped file with no program loaded
//! (baseline) and with each tier loaded and armed, each also with kive's
//! change notification watching the trapped path.

use std::time::Duration;

use kive::trap::{EngineConfig, Tier};

use super::notify::{check_quiet, watch_trapped};
use super::open_loop::{median, min_max, pct, spawn_open_loop, Rng};
use super::quiet::measure_clean;
use super::{load_armed, progress, Config, Files};

/// Table 1. Returns the table, how many measurements saw foreign links,
/// whether every child was tuned (nice -20, pinned) and the baseline's
/// median wall ns/op.
pub(super) fn overhead_table(
    configs: &[Config],
    files: &Files,
    iterations: u64,
    rounds: usize,
    tune: bool,
) -> Result<(String, usize, bool, f64), String> {
    let warmup = (iterations / 100).clamp(1, 10_000);
    let mut rng = Rng::new();
    // per configuration: (CPU ns/op, wall ns/op) per round
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut foreign_seen = 0usize;
    let mut all_tuned = true;
    let n = configs.len();
    for round in 0..rounds {
        for i in 0..n {
            let idx = (i + round) % n;
            let c = &configs[idx];
            let engine = match c.choice {
                Some(choice) => {
                    let mut e = load_armed(
                        choice,
                        c.traps,
                        EngineConfig::default().wakeup_bytes,
                        files,
                        &mut rng,
                    )?;
                    if e.tier() == Tier::Fanotify {
                        // its marks are in the kernel only while a reader answers
                        e.start_reader(Duration::from_millis(10), |_| {})
                            .map_err(|err| err.to_string())?;
                    }
                    Some(e)
                }
                None => None,
            };
            let notify = if c.notify {
                Some(watch_trapped(&files.bench.trapped)?)
            } else {
                None
            };
            let ours = engine.as_ref().map_or(0, |e| e.programs().len());
            let (times, dirty) = measure_clean(ours, || {
                spawn_open_loop(&files.bench.free, iterations, warmup, tune)
            })?;
            if let Some(w) = &notify {
                check_quiet(w)?;
            }
            drop(notify);
            foreign_seen += usize::from(dirty);
            all_tuned &= times.tuned;
            if let Some(e) = &engine {
                let s = e.kernel_stats();
                if s.hits != 0 {
                    return Err(format!(
                        "{} hits on an untrapped file: the measurement is wrong",
                        s.hits
                    ));
                }
            }
            drop(engine);
            let c_ns = times.cpu as f64 / iterations as f64;
            let w_ns = (times.end - times.start) as f64 / iterations as f64;
            progress(format_args!(
                "round {}/{rounds}: {:<36} traps {:>6}: {c_ns:7.1} CPU ns/op, {w_ns:7.1} wall ns/op",
                round + 1,
                c.label,
                c.traps
            ));
            cpu[idx].push(c_ns);
            wall[idx].push(w_ns);
        }
    }
    let base_cpu = median(&cpu[0]);
    let base_min = min_max(&cpu[0]).0;
    let base_wall = median(&wall[0]);
    let mut t = String::new();
    t.push_str(&format!(
        "### open+close of an untrapped file ({iterations} iterations per measurement, {rounds} interleaved rounds)\n\n"
    ));
    t.push_str(
        "| configuration | armed traps | CPU ns/op (median) | ratio to baseline | CPU ns/op min–max | ratio of minima | per-round ratio: median (min–max) | own cost: per-round ratio to its reference, median (min–max) | wall ns/op (median) | wall ratio |\n",
    );
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, c) in configs.iter().enumerate() {
        let m = median(&cpu[i]);
        let (lo, hi) = min_max(&cpu[i]);
        // each round against the same round's baseline: robust to drift
        let per_round: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(x, b)| x / b).collect();
        let (rlo, rhi) = min_max(&per_round);
        let rmed = median(&per_round);
        let own = if i == c.reference {
            "–".to_string()
        } else if c.reference == 0 {
            "as per round".to_string()
        } else {
            let r: Vec<f64> = cpu[i]
                .iter()
                .zip(&cpu[c.reference])
                .map(|(x, b)| x / b)
                .collect();
            let (lo, hi) = min_max(&r);
            format!("{:.3} ({lo:.3}–{hi:.3})", median(&r))
        };
        let ratio = m / base_cpu;
        let w = median(&wall[i]);
        let wratio = w / base_wall;
        let traps = if c.choice.is_some() {
            c.traps.to_string()
        } else {
            "–".into()
        };
        t.push_str(&format!(
            "| {} | {traps} | {m:.0} | {ratio:.3} ({}) | {lo:.0}–{hi:.0} | {:.3} ({}) | {rmed:.3} ({rlo:.3}–{rhi:.3}) | {own} | {w:.0} | {wratio:.3} ({}) |\n",
            c.label,
            pct(ratio),
            lo / base_min,
            pct(lo / base_min),
            pct(wratio)
        ));
    }
    Ok((t, foreign_seen, all_tuned, base_wall))
}
