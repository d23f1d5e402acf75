//! The production tiers' own cost (`cargo bench -p kive --bench vm_bpf_stats`):
//! the LSM and trampoline tiers (with the tracepoint tier as a reference)
//! in Debian's 6.1 kernel, booted under qemu by `vmtest/run.sh` (this
//! machine's kernel refuses BPF trampolines).
//!
//! Under TCG, wall and CPU time cannot resolve a 1–3 % difference, so the
//! figure that counts is the kernel's own accounting: with BPF run-time
//! statistics on (`BPF_ENABLE_STATS`, the switch behind
//! `kernel.bpf_stats_enabled`), each program's `run_time_ns / run_cnt` during
//! an untrapped open+close loop, set against the same run's cost of one
//! open+close with no program loaded. The tamper hooks
//! (`lsm/inode_{rename,link,unlink}`, `fentry/security_inode_*`) must not run
//! at all during that loop: their run counts are in the table.
//!
//! One binary, two roles: on the host (`--bench`, as cargo bench passes it)
//! it boots the VM with itself as a `--test-bin` of `vmtest/run.sh`; in the
//! guest (started as `/vmtest/tests/vm_bpf_stats --test-threads=1`) it
//! measures and prints Markdown tables between `BPF-STATS-BEGIN` and
//! `BPF-STATS-END`, which the host prints on stdout (progress on stderr).
//! The host then measures the tracepoint tier the same way on its own
//! kernel, not emulated: how far TCG moves a program's share of an
//! open+close shows in that tier's two rows.
//! Without `--bench` on the host it does nothing, so `cargo test
//! --all-targets` does not boot a VM. Needs root and qemu (installed by
//! `vmtest/run.sh` when missing); the guest run takes several minutes.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use kive::trap::stats::{ProgramStats, RunTimeStats};
use kive::trap::{Engine, EngineConfig, TierChoice};

#[path = "support/armed.rs"]
mod armed;
#[path = "support/open_loop.rs"]
mod open_loop;
#[path = "../tests/support/vm.rs"]
mod vm;

use armed::{arm_no_file_keys, audit, BenchFiles};
use open_loop::{median, min_max, pct, spawn_open_loop, ChildArgs, Rng};

/// Timed open+close iterations per measurement in the guest.
const ITERATIONS: u64 = 50_000;
/// Untimed iterations before each timed loop.
const WARMUP: u64 = 500;
/// Interleaved rounds.
const ROUNDS: usize = 5;
/// Armed trap counts: each tier is loaded once per round and measured with
/// the first count, then armed up to the second and measured again.
const TRAPS: [u32; 2] = [10, 10_000];
/// The tiers measured in the VM, in the first round's order.
const VM_TIERS: [TierChoice; 3] = [
    TierChoice::Lsm,
    TierChoice::Trampoline,
    TierChoice::Tracepoint,
];
/// The tiers measured on this machine's kernel too, the same way: the
/// calibration of what TCG does to the ratio (this kernel refuses the others).
const HOST_TIERS: [TierChoice; 1] = [TierChoice::Tracepoint];
const BEGIN: &str = "BPF-STATS-BEGIN";
const END: &str = "BPF-STATS-END";

#[derive(Parser, Debug)]
#[command(
    name = "vm_bpf_stats",
    about = "kive: the LSM and trampoline tiers' BPF run time per call, in Debian 6.1 under qemu"
)]
struct Args {
    /// Run the benchmark (cargo bench passes this flag).
    #[arg(long, hide = true)]
    bench: bool,
    /// Passed by the VM's suite runner: the guest role.
    #[arg(long, hide = true)]
    test_threads: Option<String>,
    #[command(flatten)]
    child: ChildArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if let Some(child) = args.child.run() {
        child
    } else if args.test_threads.is_some() && Path::new("/vmtest/tests").is_dir() {
        measure_tiers(&VM_TIERS).map(|tables| println!("{BEGIN}\n{tables}{END}"))
    } else if args.bench {
        host()
    } else {
        eprintln!(
            "kive vm_bpf_stats: not run (pass --bench, as `cargo bench -p kive --bench vm_bpf_stats` does)"
        );
        Ok(())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm_bpf_stats: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Boots the VM with this binary and prints the tables the guest made.
fn host() -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let args: Vec<OsString> = vec![
        "--kive".into(),
        env!("CARGO_BIN_EXE_kive").into(),
        "--test-bin".into(),
        me.into_os_string(),
    ];
    let refs: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    eprintln!("vm_bpf_stats: booting Debian 6.1 under qemu (TCG): several minutes");
    let run = vm::run_vm(&refs, 1800);
    eprintln!("vm_bpf_stats: vmtest/run.sh took {:.0?}", run.elapsed);
    let out = vm::section(&run.console, "suite.vm_bpf_stats").unwrap_or_default();
    let begin = out.iter().position(|l| l == BEGIN);
    let end = out.iter().position(|l| l == END);
    match (begin, end) {
        (Some(b), Some(e)) if b < e => {
            let booted = run
                .console
                .iter()
                .find(|l| l.starts_with("KIVE-VM-BOOTED"))
                .cloned()
                .unwrap_or_default();
            println!("Guest: {booted}\n");
            for line in &out[b + 1..e] {
                println!("{line}");
            }
            eprintln!("vm_bpf_stats: the tracepoint tier on this machine's kernel (calibration)");
            let here = measure_tiers(&HOST_TIERS)?;
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            println!(
                "\n## The same measurement on this machine's kernel ({}, not emulated; shared and loaded: see the method)\n\n{here}",
                kernel.trim()
            );
            Ok(())
        }
        _ => Err(format!(
            "the guest printed no tables\n--- its output:\n{}\n{}",
            out.join("\n"),
            run.tail()
        )),
    }
}

/// What one measurement saw.
struct Sample {
    /// The open+close loop's CPU ns per iteration.
    cpu_ns: f64,
    /// Its wall ns per iteration.
    wall_ns: f64,
    /// Per program: (name, runs, run time ns) during the loop.
    programs: Vec<(String, u64, u64)>,
}

/// One configuration's samples over the rounds.
struct Row {
    label: String,
    traps: u32,
    samples: Vec<Sample>,
}

/// Measures the baseline and `tiers` (see the method printed) and returns
/// the tables.
fn measure_tiers(tiers: &[TierChoice]) -> Result<String, String> {
    let _stats = RunTimeStats::enable().map_err(|e| {
        let why = std::error::Error::source(&e).map(ToString::to_string);
        format!("{e}: {}", why.unwrap_or_default())
    })?;
    let files = BenchFiles::make(None, "kive-bpf-stats.")?;
    let free = &files.free;
    let mut rng = Rng::new();
    let mut baseline = Row {
        label: "baseline (no program)".into(),
        traps: 0,
        samples: Vec::new(),
    };
    let mut rows: Vec<Row> = Vec::new();
    for &tier in tiers {
        for traps in TRAPS {
            rows.push(Row {
                label: tier.as_str().into(),
                traps,
                samples: Vec::new(),
            });
        }
    }
    // slots: 0 = baseline, 1.. = the tiers; rotated by one each round
    let slots = tiers.len() + 1;
    for round in 0..ROUNDS {
        for k in 0..slots {
            let slot = (k + round) % slots;
            if slot == 0 {
                eprintln!("round {}: baseline", round + 1);
                baseline.samples.push(measure(free, None)?);
                continue;
            }
            let tier = tiers[slot - 1];
            eprintln!("round {}: {}", round + 1, tier.as_str());
            let cfg = EngineConfig {
                tier,
                max_traps: (TRAPS[1] + 1).next_power_of_two(),
                ..EngineConfig::default()
            };
            let engine =
                Engine::load(&cfg).map_err(|e| format!("loading {}: {e}", tier.as_str()))?;
            use std::os::fd::AsFd;
            engine
                .arm_file(files.trapped_pin.as_fd(), files.trapped_key, audit(1))
                .map_err(|e| e.to_string())?;
            let mut armed = 1u32;
            for (i, traps) in TRAPS.into_iter().enumerate() {
                let dev = files.trapped_key.dev;
                arm_no_file_keys(&engine, dev, armed + 1..traps + 1, &mut rng)?;
                armed = armed.max(traps);
                let s = measure(free, Some(&engine))?;
                rows[(slot - 1) * TRAPS.len() + i].samples.push(s);
            }
            let hits = engine.kernel_stats().hits;
            if hits != 0 {
                return Err(format!(
                    "{}: {hits} hits on untrapped opens (the loop must hit nothing)",
                    tier.as_str()
                ));
            }
        }
    }
    Ok(tables(&baseline, &rows))
}

/// One open+close loop in a child; with an engine, its programs' counters
/// before and after.
fn measure(free: &Path, engine: Option<&Engine>) -> Result<Sample, String> {
    let before = engine.map(Engine::program_stats).unwrap_or_default();
    let t = spawn_open_loop(free, ITERATIONS, WARMUP, true)?;
    let after = engine.map(Engine::program_stats).unwrap_or_default();
    let programs = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let (cnt0, ns0) = b.map_or((0, 0), |b: &ProgramStats| (b.run_cnt, b.run_time_ns));
            (
                a.name.clone(),
                a.run_cnt.saturating_sub(cnt0),
                a.run_time_ns.saturating_sub(ns0),
            )
        })
        .collect();
    Ok(Sample {
        cpu_ns: t.cpu as f64 / ITERATIONS as f64,
        wall_ns: t.end.saturating_sub(t.start) as f64 / ITERATIONS as f64,
        programs,
    })
}

fn tables(baseline: &Row, rows: &[Row]) -> String {
    let base_cpu: Vec<f64> = baseline.samples.iter().map(|s| s.cpu_ns).collect();
    let base_wall: Vec<f64> = baseline.samples.iter().map(|s| s.wall_ns).collect();
    let base = median(&base_cpu);
    let loops = ITERATIONS + WARMUP;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "### BPF run time per call during an untrapped open+close loop ({ITERATIONS} timed + {WARMUP} warm-up iterations per measurement, {ROUNDS} interleaved rounds)\n"
    );
    let _ = writeln!(
        t,
        "Syscall cost of the same run: one open+close with no program loaded = **{base:.0} ns** of CPU (median; min–max {:.0}–{:.0}).\n",
        min_max(&base_cpu).0,
        min_max(&base_cpu).1
    );
    let _ = writeln!(
        t,
        "| tier | armed traps | program | runs per open+close | ns per run (all rounds) | ns per run min–max (rounds) | BPF ns per open+close | share of the open+close |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let names: Vec<String> = row
            .samples
            .first()
            .map(|s| s.programs.iter().map(|p| p.0.clone()).collect())
            .unwrap_or_default();
        for name in names {
            let per_round: Vec<(u64, u64)> = row
                .samples
                .iter()
                .filter_map(|s| s.programs.iter().find(|p| p.0 == name))
                .map(|p| (p.1, p.2))
                .collect();
            let (cnt, ns) = per_round
                .iter()
                .fold((0u64, 0u64), |(c, n), (dc, dn)| (c + dc, n + dn));
            let rounds = per_round.len().max(1) as f64;
            let runs_per_op = cnt as f64 / rounds / loops as f64;
            let ns_per_op = ns as f64 / rounds / loops as f64;
            let (per_run, range) = if cnt == 0 {
                ("–".to_string(), "–".to_string())
            } else {
                let v: Vec<f64> = per_round
                    .iter()
                    .filter(|(c, _)| *c > 0)
                    .map(|(c, n)| *n as f64 / *c as f64)
                    .collect();
                let (lo, hi) = min_max(&v);
                (
                    format!("{:.1}", ns as f64 / cnt as f64),
                    format!("{lo:.1}–{hi:.1}"),
                )
            };
            let _ = writeln!(
                t,
                "| {} | {} | {name} | {runs_per_op:.3} (total {cnt}) | {per_run} | {range} | {ns_per_op:.1} | {:.2} % |",
                row.label,
                row.traps,
                ns_per_op / base * 100.0
            );
        }
    }
    let _ = writeln!(
        t,
        "\n### Time ratios of the same run (in the VM under TCG: indicative only)\n\n| configuration | armed traps | CPU ns/op (median) | ratio of medians | per-round ratio: median (min–max) | wall ns/op (median) | wall ratio |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let wall_base = median(&base_wall);
    let _ = writeln!(
        t,
        "| {} | – | {base:.0} | 1.000 | 1.000 | {wall_base:.0} | 1.000 |",
        baseline.label
    );
    for row in rows {
        let cpu: Vec<f64> = row.samples.iter().map(|s| s.cpu_ns).collect();
        let wall: Vec<f64> = row.samples.iter().map(|s| s.wall_ns).collect();
        let per_round: Vec<f64> = cpu.iter().zip(&base_cpu).map(|(c, b)| c / b).collect();
        let (lo, hi) = min_max(&per_round);
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.3} ({}) | {:.3} ({lo:.3}–{hi:.3}) | {:.0} | {:.3} |",
            row.label,
            row.traps,
            median(&cpu),
            median(&cpu) / base,
            pct(median(&cpu) / base),
            median(&per_round),
            median(&wall),
            median(&wall) / wall_base
        );
    }
    let _ = writeln!(
        t,
        "\nMethod: the machine (in the VM: Debian's 6.1 kernel, 2 vCPUs under qemu TCG, nothing else running in the guest) switches BPF run-time statistics on, then per round measures the baseline and each tier in an order rotated by one each round; each tier is loaded once per round, armed with 10 keys (a real file elsewhere plus random inode numbers that match no file), measured, armed up to 10,000 and measured again. A measurement is a child process (this binary, nice -20, pinned to the last vCPU) doing {WARMUP} untimed then {ITERATIONS} timed open(O_RDONLY)+close of an untrapped file; the programs' run_cnt and run_time_ns are read before and after the child (so the window also holds the warm-up and the child's own start: runs per open+close counts every run in the window over {loops} iterations). ns per run = Δrun_time_ns / Δrun_cnt; BPF ns per open+close = Δrun_time_ns / {loops}; share = that over the baseline's CPU ns per open+close. run_time_ns covers the program body only (not the LSM hook's or trampoline's call into it) and the statistics themselves add two clock reads per run. 0 hits were counted on every tier (the loop touched no trap). On a shared host, a program on every syscall (the tracepoint tier) also runs for other processes' syscalls in the window: its runs per open+close are then above 2 and its ns per run is the average over that mix."
    );
    t
}
