//! The trap engine's cost and throughput (`cargo bench -p kive --bench engine`).
//!
//! Prints two Markdown tables and the method on stdout, nothing else (progress
//! goes to stderr):
//!
//! 1. open+close of an UNtrapped file, no program loaded (baseline) vs each
//!    hook tier that loads here, with few and many armed traps: median ns/op
//!    over interleaved rounds and the ratio to the baseline of the same run;
//!    then the same rows with kive's change notification watching the
//!    trapped path (as the runtime does on every tier), whose own row is
//!    their reference;
//! 2. event throughput: a child process opens a trapped file in a tight loop,
//!    the ring reader counts what it receives, the kernel counts drops; once
//!    waking the reader on every event, once past the default fill threshold.
//!
//! Options (after `--`): `--tiers lsm,trampoline,fentry,tracepoint,tracepoint-classic,fanotify`,
//! `--iterations N` (or `KIVE_BENCH_ITERATIONS`, default 1,000,000),
//! `--rounds N` (or `KIVE_BENCH_ROUNDS`, default 7), `--traps 10,10000`,
//! `--events N` (default 200,000), `--throughput-rounds N` (default 3),
//! `--skip-overhead`, `--skip-throughput`, `--no-notify`, `--dir PATH`.
//!
//! The binary measures only when given `--bench` (cargo bench passes it), so
//! that `cargo test --all-targets` does not run a minutes-long benchmark.
//! To run it elsewhere (e.g. in the VM with the LSM tier), copy the binary
//! cargo built (`target/release/deps/engine-*`) and run
//! `engine --bench --tiers lsm,trampoline,tracepoint`.
//! It needs root (CAP_BPF + CAP_SYS_ADMIN) for every tier row.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Parser;

#[path = "support/armed.rs"]
mod armed;
#[path = "engine/method.rs"]
mod method;
#[path = "engine/notify.rs"]
mod notify;
#[path = "support/open_loop.rs"]
mod open_loop;
#[path = "engine/overhead.rs"]
mod overhead;
#[path = "engine/quiet.rs"]
mod quiet;
#[path = "engine/throughput.rs"]
mod throughput;
use armed::{arm_no_file_keys, audit, BenchFiles};
use kive::trap::{Engine, EngineConfig, FloodLimit, Tier, TierChoice, TrapError, TrapKey};
use method::{loadavg, method, RunInfo};
use open_loop::{pin_file, ChildArgs, Rng};
use overhead::overhead_table;
use throughput::throughput_table;

const DEFAULT_ITERATIONS: u64 = 1_000_000;
const DEFAULT_ROUNDS: usize = 7;

#[derive(Parser, Debug)]
#[command(
    name = "engine",
    about = "kive trap engine benchmark: open+close overhead per hook tier, event throughput"
)]
struct Args {
    /// Tiers to try (comma-separated): lsm, trampoline, fentry, tracepoint,
    /// tracepoint-classic. A tier that does not load is listed as such.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lsm,trampoline,fentry,tracepoint,tracepoint-classic,fanotify"
    )]
    tiers: Vec<String>,
    /// open+close iterations per measurement [env KIVE_BENCH_ITERATIONS; default 1000000].
    #[arg(long)]
    iterations: Option<u64>,
    /// Interleaved rounds [env KIVE_BENCH_ROUNDS; default 7].
    #[arg(long)]
    rounds: Option<usize>,
    /// Armed trap counts to measure each tier with (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    traps: Vec<u32>,
    /// Opens of the trapped file per throughput measurement.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Interleaved rounds of the throughput table.
    #[arg(long, default_value_t = 3)]
    throughput_rounds: usize,
    /// Skip the open+close table.
    #[arg(long)]
    skip_overhead: bool,
    /// Skip the throughput table.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the open+close rows with kive's change notification.
    #[arg(long)]
    no_notify: bool,
    /// Do not raise the measuring child's priority (nice -20) or pin it to
    /// the last CPU.
    #[arg(long)]
    no_tune: bool,
    /// Directory for the benchmark's files (default: a new directory in the
    /// system temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the benchmark (cargo bench passes this flag).
    #[arg(long, hide = true)]
    bench: bool,
    #[command(flatten)]
    child: ChildArgs,
}

/// A tier as named on `--tiers`: any forced choice (not `auto`).
fn parse_tier(s: &str) -> Result<TierChoice, String> {
    match s.trim().parse::<TierChoice>()? {
        TierChoice::Auto => Err("--tiers: name the tiers to measure, not auto".into()),
        t => Ok(t),
    }
}

/// One row of the open+close table.
#[derive(Debug, Clone)]
struct Config {
    label: String,
    /// `None` = baseline (no program loaded).
    choice: Option<TierChoice>,
    traps: u32,
    /// kive's change notification watches the trapped file's path during
    /// the measurement, as the runtime does on every tier.
    notify: bool,
    /// The row this one's own cost is measured against: the baseline (for
    /// "change notification only" too), or for a tier row with change
    /// notification, "change notification only".
    reference: usize,
}

/// Files the benchmark opens: the free one in the open+close table, the
/// trapped one only in the throughput table.
struct Files {
    bench: BenchFiles,
    /// Decoy files for the fanotify tier's extra traps (it marks inodes, so
    /// its traps are real files: `decoys[i]` = (path, key)), made on demand.
    /// Not held open: the engine keeps its own fd of each armed file.
    decoys: std::cell::RefCell<Vec<(PathBuf, TrapKey)>>,
}

impl Files {
    /// At least `n` decoy files (pinned), created in `dir/decoys/`.
    fn ensure_decoys(&self, n: usize) -> Result<(), String> {
        let mut decoys = self.decoys.borrow_mut();
        let sub = self.bench.dir.join("decoys");
        std::fs::create_dir_all(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
        while decoys.len() < n {
            let p = sub.join(format!("d{}", decoys.len()));
            std::fs::write(&p, b"").map_err(|e| format!("writing {}: {e}", p.display()))?;
            let (_, key) = pin_file(&p)?;
            decoys.push((p, key));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(child) = args.child.run() {
        return match child {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("engine bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.bench {
        eprintln!(
            "kive engine benchmark: not run (pass --bench, as `cargo bench -p kive --bench engine` does)"
        );
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

fn run(args: &Args) -> Result<(), String> {
    let iterations = match args.iterations {
        Some(n) => n,
        None => env_or("KIVE_BENCH_ITERATIONS", DEFAULT_ITERATIONS)?,
    };
    let rounds = match args.rounds {
        Some(n) => n,
        None => env_or("KIVE_BENCH_ROUNDS", DEFAULT_ROUNDS)?,
    };
    if iterations == 0 || rounds == 0 || args.throughput_rounds == 0 {
        return Err("iterations and rounds must be at least 1".into());
    }
    let tiers = args
        .tiers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_tier(s))
        .collect::<Result<Vec<_>, _>>()?;
    if args.traps.contains(&0) {
        return Err("--traps: every count must be at least 1 (the trapped file is one)".into());
    }
    ensure_mounts();
    // the fanotify rows pin a decoy file per trap, and the engine a copy of each
    let most = args.traps.iter().copied().max().unwrap_or(1);
    kive::node::limits::ensure_nofile(2 * u64::from(most) + 1024);
    let files = make_files(args.dir.as_deref())?;

    // Which tiers load here (each tried once; the error's first line kept).
    let mut loadable: Vec<(TierChoice, Tier)> = Vec::new();
    let mut refused: Vec<(TierChoice, String)> = Vec::new();
    for &t in &tiers {
        progress(format_args!("probing tier {}", t.as_str()));
        match Engine::load(&engine_config(t, 1, EngineConfig::default().wakeup_bytes)) {
            Ok(e) => {
                let got = e.tier();
                drop(e);
                if t == TierChoice::Trampoline && got == Tier::Fentry {
                    refused.push((
                        t,
                        "fmod_ret refused; the trampoline choice fell back to fentry (see its row)"
                            .into(),
                    ));
                    if !tiers.contains(&TierChoice::Fentry) {
                        loadable.push((TierChoice::Fentry, got));
                    }
                } else {
                    loadable.push((t, got));
                }
            }
            Err(e) => refused.push((t, format!("not loadable here: {}", first_line(&e)))),
        }
    }

    let mut out = String::new();
    let uname = rustix::system::uname();
    let kernel = uname.release().to_string_lossy().into_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = loadavg();

    let mut foreign_total = 0usize;
    let mut tuned = None;
    let mut base_wall = None;
    let mut refused_notify = None;
    if !args.skip_overhead {
        // the rows with change notification only where it can watch the
        // bench's trapped path (said why not, as a refused tier is)
        let notify = if args.no_notify {
            false
        } else {
            match notify::watch_trapped(&files.bench.trapped) {
                Ok(_) => true,
                Err(e) => {
                    refused_notify = Some(e);
                    false
                }
            }
        };
        let configs = overhead_configs(&loadable, &args.traps, notify);
        let (table, foreign, all_tuned, wall) =
            overhead_table(&configs, &files, iterations, rounds, !args.no_tune)?;
        base_wall = Some(wall);
        foreign_total += foreign;
        tuned = Some(all_tuned);
        out.push_str(&table);
        out.push('\n');
    }
    for (t, why) in &refused {
        out.push_str(&format!("- {}: {why}\n", t.as_str()));
    }
    if let Some(why) = &refused_notify {
        out.push_str(&format!(
            "- change notification: not measured here: {why}\n"
        ));
    }
    if !refused.is_empty() || refused_notify.is_some() {
        out.push('\n');
    }
    if !args.skip_throughput {
        let (table, foreign) = throughput_table(
            &loadable,
            &files,
            args.events,
            args.throughput_rounds,
            base_wall,
        )?;
        foreign_total += foreign;
        out.push_str(&table);
        out.push('\n');
    }
    let load_after = loadavg();
    out.push_str(&method(&RunInfo {
        kernel,
        cpus,
        iterations,
        rounds,
        args,
        load_before,
        load_after,
        foreign: foreign_total,
        tuned,
    }));
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the table: {e}"))
}

/// The open+close table's rows: the baseline and each tier with each trap
/// count, then (`notify`) the same with kive's change notification (the
/// runtime's watch on the trapped path, on every tier), whose own row is
/// their reference.
fn overhead_configs(loadable: &[(TierChoice, Tier)], traps: &[u32], notify: bool) -> Vec<Config> {
    let mut configs = Vec::new();
    let kinds: &[bool] = if notify { &[false, true] } else { &[false] };
    for &notify in kinds {
        let reference = configs.len();
        configs.push(Config {
            label: if notify {
                "change notification only".into()
            } else {
                "baseline (no program)".into()
            },
            choice: None,
            traps: 0,
            notify,
            reference: 0,
        });
        for &(t, got) in loadable {
            for &n in traps {
                let label = tier_label(t, got);
                configs.push(Config {
                    label: if notify {
                        format!("{label} + notification")
                    } else {
                        label
                    },
                    choice: Some(t),
                    traps: n,
                    notify,
                    reference,
                });
            }
        }
    }
    configs
}

fn tier_label(asked: TierChoice, got: Tier) -> String {
    match (asked, got) {
        (TierChoice::Trampoline, Tier::Trampoline) => "trampoline (fmod_ret)".into(),
        (TierChoice::Tracepoint, _) => "tracepoint (tp_btf)".into(),
        (TierChoice::TracepointClassic, _) => "tracepoint-classic".into(),
        (_, got) => got.to_string(),
    }
}

fn progress(msg: std::fmt::Arguments<'_>) {
    eprintln!("engine bench: {msg}");
}

/// The first line of an error, with the inner errors' first lines when the
/// engine tried several tiers.
fn first_line(e: &TrapError) -> String {
    match e {
        TrapError::NoTier(inner) => inner.iter().map(first_line).collect::<Vec<_>>().join("; "),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The engine of a row, with the flood limit off: the throughput table's
/// one child opening one trapped file in a loop is exactly what it holds
/// back (a burst of 16, then 64/s), so the reader would see none of the
/// load; the open+close table's untrapped opens never reach it.
fn engine_config(tier: TierChoice, traps: u32, wakeup_bytes: u64) -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        tier,
        max_traps: d.max_traps.max(traps.saturating_add(1).next_power_of_two()),
        wakeup_bytes,
        flood_limit: FloodLimit {
            events: 0,
            ..d.flood_limit
        },
        ..d
    }
}

/// bpffs and tracefs (classic tracepoints are attached through tracefs ids).
fn ensure_mounts() {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(
            "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
             mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn make_files(dir: Option<&Path>) -> Result<Files, String> {
    Ok(Files {
        bench: BenchFiles::make(dir, "kive-bench.")?,
        decoys: std::cell::RefCell::new(Vec::new()),
    })
}

/// Loads `choice` and arms `traps` keys: the trapped file plus `traps - 1`
/// random keys on the same device that match no file (inode numbers with the
/// top bit set); on the fanotify tier, which marks inodes, `traps - 1` real
/// decoy files in the bench directory instead.
fn load_armed(
    choice: TierChoice,
    traps: u32,
    wakeup_bytes: u64,
    files: &Files,
    rng: &mut Rng,
) -> Result<Engine, String> {
    let engine = Engine::load(&engine_config(choice, traps, wakeup_bytes))
        .map_err(|e| format!("loading {choice:?}: {}", first_line(&e)))?;
    engine
        .arm_file(
            files.bench.trapped_pin.as_fd(),
            files.bench.trapped_key,
            audit(1),
        )
        .map_err(|e| e.to_string())?;
    if engine.tier() == Tier::Fanotify {
        let extra = traps.saturating_sub(1) as usize;
        files.ensure_decoys(extra)?;
        for (i, (path, key)) in files.decoys.borrow().iter().take(extra).enumerate() {
            let (pin, _) = pin_file(path)?;
            engine
                .arm_file(pin.as_fd(), *key, audit(i as u32 + 2))
                .map_err(|e| e.to_string())?;
        }
        return Ok(engine);
    }
    arm_no_file_keys(&engine, files.bench.trapped_key.dev, 2..traps + 1, rng)?;
    Ok(engine)
}
