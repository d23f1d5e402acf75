//! The trap engine's cost and throughput (`cargo bench -p kive --bench engine`).
//!
//! Prints two Markdown tables and the method on stdout, nothing else (progress
//! goes to stderr):
//!
//! 1. open+close of an UNtrapped file, no program loaded (baseline) vs each
//!    hook tier that loads here, with few and many armed traps: median ns/op
//!    over interleaved rounds and the ratio to the baseline of the same run;
//! 2. event throughput: a child process opens a trapped file in a tight loop,
//!    the ring reader counts what it receives, the kernel counts drops; once
//!    waking the reader on every event, once past the default fill threshold.
//!
//! Options (after `--`): `--tiers lsm,trampoline,fentry,tracepoint,tracepoint-classic,fanotify`,
//! `--iterations N` (or `KIVE_BENCH_ITERATIONS`, default 1,000,000),
//! `--rounds N` (or `KIVE_BENCH_ROUNDS`, default 7), `--traps 10,10000`,
//! `--events N` (default 200,000), `--throughput-rounds N` (default 3),
//! `--skip-overhead`, `--skip-throughput`, `--dir PATH`.
//!
//! The binary measures only when given `--bench` (cargo bench passes it), so
//! that `cargo test --all-targets` does not run a minutes-long benchmark.
//! To run it elsewhere (e.g. in the VM with the LSM tier), copy the binary
//! cargo built (`target/release/deps/engine-*`) and run
//! `engine --bench --tiers lsm,trampoline,tracepoint`.
//! It needs root (CAP_BPF + CAP_SYS_ADMIN) for every tier row.

use std::collections::HashSet;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "support/open_loop.rs"]
mod open_loop;
use kive::trap::{Engine, EngineConfig, RawEvent, Tier, TierChoice, TrapError, TrapKey, TrapValue};
use open_loop::{
    child_open_loop, median, min_max, monotonic_ns, pct, pin_file, spawn_open_loop, Rng,
};

const DEFAULT_ITERATIONS: u64 = 1_000_000;
const DEFAULT_ROUNDS: usize = 7;
/// How long to wait for another process's tracing programs to go away.
/// How long to wait for other processes' tracing links to go away
/// (`KIVE_BENCH_QUIET_WAIT_S`, default 120 s).
fn quiet_wait() -> Duration {
    Duration::from_secs(env_or("KIVE_BENCH_QUIET_WAIT_S", 120u64).unwrap_or(120))
}
/// Measurements taken again when another process's programs showed up.
/// Measurements tried before one with foreign links is kept
/// (`KIVE_BENCH_TRIES`, default 5).
fn tries() -> usize {
    env_or("KIVE_BENCH_TRIES", 5usize).unwrap_or(5).max(1)
}

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
    /// Internal: be the child that opens and closes PATH in a loop.
    #[arg(long, hide = true, value_name = "PATH")]
    child_open_loop: Option<PathBuf>,
    /// Internal: the child's timed iterations.
    #[arg(long, hide = true, default_value_t = 0)]
    child_count: u64,
    /// Internal: the child's untimed warm-up iterations.
    #[arg(long, hide = true, default_value_t = 0)]
    child_warmup: u64,
    /// Internal: the child raises its priority and pins itself.
    #[arg(long, hide = true)]
    child_tune: bool,
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
}

/// Files the benchmark opens.
struct Files {
    _tmp: Option<tempfile::TempDir>,
    /// Opened in the open+close table; never armed.
    free: PathBuf,
    /// Armed in every configuration; opened only in the throughput table.
    trapped: PathBuf,
    trapped_key: TrapKey,
    /// The trapped file's `O_PATH` pin (the fanotify tier marks the file).
    trapped_pin: OwnedFd,
    /// Decoy files for the fanotify tier's extra traps (it marks inodes, so
    /// its traps are real files: `decoys[i]` = (path, key)), made on demand.
    /// Not held open: the engine keeps its own fd of each armed file.
    decoys: std::cell::RefCell<Vec<(PathBuf, TrapKey)>>,
    dir: PathBuf,
}

impl Files {
    /// At least `n` decoy files (pinned), created in `dir/decoys/`.
    fn ensure_decoys(&self, n: usize) -> Result<(), String> {
        let mut decoys = self.decoys.borrow_mut();
        let sub = self.dir.join("decoys");
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
    if let Some(path) = &args.child_open_loop {
        return match child_open_loop(path, args.child_count, args.child_warmup, args.child_tune) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("engine bench child: {}: {e}", path.display());
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
    if !args.skip_overhead {
        let mut configs = vec![Config {
            label: "baseline (no program)".into(),
            choice: None,
            traps: 0,
        }];
        for &(t, got) in &loadable {
            for &n in &args.traps {
                configs.push(Config {
                    label: tier_label(t, got),
                    choice: Some(t),
                    traps: n,
                });
            }
        }
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
    if !refused.is_empty() {
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

fn engine_config(tier: TierChoice, traps: u32, wakeup_bytes: u64) -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        tier,
        max_traps: d.max_traps.max(traps.saturating_add(1).next_power_of_two()),
        wakeup_bytes,
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
    let (tmp, dir) = match dir {
        Some(d) => (None, d.to_path_buf()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("kive-bench.")
                .tempdir()
                .map_err(|e| format!("creating a temp dir: {e}"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let free = dir.join("untrapped.txt");
    let trapped = dir.join("trapped.txt");
    for p in [&free, &trapped] {
        std::fs::write(p, b"kive bench\n").map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    let (trapped_pin, trapped_key) = pin_file(&trapped)?;
    Ok(Files {
        _tmp: tmp,
        free,
        trapped,
        trapped_key,
        trapped_pin,
        decoys: std::cell::RefCell::new(Vec::new()),
        dir,
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
            files.trapped_pin.as_fd(),
            files.trapped_key,
            TrapValue {
                trap_id: 1,
                block: false,
                conditions: 0,
            },
        )
        .map_err(|e| e.to_string())?;
    if engine.tier() == Tier::Fanotify {
        let extra = traps.saturating_sub(1) as usize;
        files.ensure_decoys(extra)?;
        for (i, (path, key)) in files.decoys.borrow().iter().take(extra).enumerate() {
            let value = TrapValue {
                trap_id: i as u32 + 2,
                block: false,
                conditions: 0,
            };
            let (pin, _) = pin_file(path)?;
            engine
                .arm_file(pin.as_fd(), *key, value)
                .map_err(|e| e.to_string())?;
        }
        return Ok(engine);
    }
    let mut seen = HashSet::new();
    let mut id = 2u32;
    while seen.len() + 1 < traps as usize {
        let key = TrapKey {
            dev: files.trapped_key.dev,
            ino: rng.next() | (1 << 63),
        };
        if !seen.insert(key) {
            continue;
        }
        engine
            .arm(
                key,
                TrapValue {
                    trap_id: id,
                    block: false,
                    conditions: 0,
                },
            )
            .map_err(|e| e.to_string())?;
        id += 1;
    }
    Ok(engine)
}

/// Links that run programs on syscalls or tracepoints, whoever owns them.
fn tracing_links() -> usize {
    use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo};
    LinkInfoIter::default()
        .filter(|l| {
            matches!(
                l.info,
                LinkTypeInfo::RawTracepoint(_)
                    | LinkTypeInfo::Tracing(_)
                    | LinkTypeInfo::PerfEvent(_)
                    | LinkTypeInfo::KprobeMulti(_)
                    | LinkTypeInfo::UprobeMulti(_)
                    | LinkTypeInfo::Unknown
            )
        })
        .count()
}

/// Another process's tracing programs slow every syscall on the machine:
/// count them so that a contaminated measurement is reported.
fn foreign_links(ours: usize) -> usize {
    tracing_links().saturating_sub(ours)
}

/// Waits (at most `QUIET_WAIT`) until no other process has tracing links.
fn wait_quiet(ours: usize) {
    let deadline = Instant::now() + quiet_wait();
    let mut said = false;
    while foreign_links(ours) > 0 && Instant::now() < deadline {
        if !said {
            progress(format_args!(
                "another process has tracing BPF links attached: waiting (at most {} s) for it to finish",
                quiet_wait().as_secs()
            ));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `f` while a thread samples foreign tracing links every 100 ms;
/// returns `f`'s result and the most foreign links seen.
fn watched<T>(ours: usize, f: impl FnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(foreign_links(ours)));
    let watcher = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                seen.fetch_max(foreign_links(ours), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let foreign = seen.load(Ordering::Relaxed).max(foreign_links(ours));
    (out, foreign)
}

/// Measures with `f` until no foreign tracing link was seen during the
/// measurement (at most `TRIES` times); returns the last result and whether
/// it was contaminated.
fn measure_clean<T>(
    ours: usize,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<(T, bool), String> {
    let mut attempt = 1;
    loop {
        wait_quiet(ours);
        let (r, foreign) = watched(ours, &mut f);
        let r = r?;
        if foreign == 0 {
            return Ok((r, false));
        }
        if attempt == tries() {
            progress(format_args!(
                "warning: {foreign} tracing link(s) of another process were attached during this measurement (kept after {} tries)", tries()
            ));
            return Ok((r, true));
        }
        progress(format_args!(
            "{foreign} tracing link(s) of another process appeared during the measurement: measuring again"
        ));
        attempt += 1;
    }
}

/// Table 1. Returns the table, how many measurements saw foreign links,
/// whether every child was tuned (nice -20, pinned) and the baseline's
/// median wall ns/op.
fn overhead_table(
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
            let ours = engine.as_ref().map_or(0, |e| e.programs().len());
            let (times, dirty) = measure_clean(ours, || {
                spawn_open_loop(&files.free, iterations, warmup, tune)
            })?;
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
                "round {}/{rounds}: {:<24} traps {:>6}: {c_ns:7.1} CPU ns/op, {w_ns:7.1} wall ns/op",
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
        "| configuration | armed traps | CPU ns/op (median) | ratio to baseline | CPU ns/op min–max | ratio of minima | per-round ratio: median (min–max) | wall ns/op (median) | wall ratio |\n",
    );
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, c) in configs.iter().enumerate() {
        let m = median(&cpu[i]);
        let (lo, hi) = min_max(&cpu[i]);
        // each round against the same round's baseline: robust to drift
        let per_round: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(x, b)| x / b).collect();
        let (rlo, rhi) = min_max(&per_round);
        let rmed = median(&per_round);
        let ratio = m / base_cpu;
        let w = median(&wall[i]);
        let wratio = w / base_wall;
        let traps = if c.choice.is_some() {
            c.traps.to_string()
        } else {
            "–".into()
        };
        t.push_str(&format!(
            "| {} | {traps} | {m:.0} | {ratio:.3} ({}) | {lo:.0}–{hi:.0} | {:.3} ({}) | {rmed:.3} ({rlo:.3}–{rhi:.3}) | {w:.0} | {wratio:.3} ({}) |\n",
            c.label,
            pct(ratio),
            lo / base_min,
            pct(lo / base_min),
            pct(wratio)
        ));
    }
    Ok((t, foreign_seen, all_tuned, base_wall))
}

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
        files.trapped_key,
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
        let t = spawn_open_loop(&files.trapped, events, 0, false)?;
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
fn throughput_table(
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the method section reports about the run.
struct RunInfo<'a> {
    kernel: String,
    cpus: usize,
    iterations: u64,
    rounds: usize,
    args: &'a Args,
    load_before: String,
    load_after: String,
    /// Measurements kept although foreign tracing links were attached.
    foreign: usize,
    /// Whether every open+close child ran at nice -20, pinned (None: no table).
    tuned: Option<bool>,
}

fn method(r: &RunInfo<'_>) -> String {
    let mut m = String::new();
    m.push_str("### method\n\n");
    m.push_str(&format!(
        "- Machine: kernel {}, {} CPUs; load average {} before, {} after.\n",
        r.kernel, r.cpus, r.load_before, r.load_after
    ));
    m.push_str(&format!(
        "- open+close: a child process (this binary re-executed) calls libc `open(path, O_RDONLY)` + \
         `close` on an untrapped file {} times after {} untimed warm-up iterations. CPU ns/op = the \
         child's own CPU time over the loop (CLOCK_THREAD_CPUTIME_ID, user + system: the BPF programs \
         run in its syscalls) / iterations: on a shared machine it leaves out the time the child \
         waits for a CPU, which wall time (CLOCK_MONOTONIC, also shown) includes.{}\n",
        r.iterations,
        (r.iterations / 100).clamp(1, 10_000),
        match r.tuned {
            Some(true) => " The child runs at nice -20, pinned to the last CPU.",
            Some(false) => " The child could not be given nice -20 and a pinned CPU (or --no-tune).",
            None => "",
        }
    ));
    m.push_str(
        "- The child is not the loader, so the kernel's `self_tgid` filter cannot shorten its \
         path (on every tier the untrapped path ends at the map lookup, before that filter, \
         anyway). Each tier row loads the engine, arms its traps (the real trapped file elsewhere \
         + random keys on the same device whose inode numbers match no file; on the fanotify \
         tier, which marks inodes, real decoy files in the bench directory, with its reader \
         running), measures, and unloads. The kernel's hit counter is checked to be 0 after each measurement.\n",
    );
    m.push_str(&format!(
        "- {} interleaved rounds: each round measures every configuration once, in an order \
         rotated by one each round, so drift (other load, CPU frequency) spreads over all rows. \
         Reported: median per configuration, its ratio to the baseline median of the same run, \
         min–max, the ratio of the minima (the run least disturbed by other load, the best \
         estimate of the intrinsic cost on a busy machine), and the per-round ratios (each to \
         the same round's baseline, so that load which changes between rounds cancels out): \
         their median and range.\n",
        r.rounds
    ));
    m.push_str(&format!(
        "- Throughput: the engine's reader thread (poll timeout 10 ms, decodes each record and \
         counts the trapped key's events) runs in this process; a child process (not the loader, \
         whose own opens are filtered) opens+closes the trapped file {} times as fast as it can. \
         events/s received = events received / (time of the last event received − start of the \
         child's loop). Drops = the kernel's per-CPU drop counter (ring buffer full, {} MiB). \
         {} rounds, interleaved.\n",
        r.args.events,
        EngineConfig::default().ring_bytes / (1024 * 1024),
        r.args.throughput_rounds
    ));
    m.push_str(&format!(
        "- Other processes' tracing BPF programs (e.g. a concurrent kernel test) slow every \
         syscall: before each measurement the bench waits for their links to go away, samples \
         them every 100 ms during it, and measures again (up to {} times) if one appeared.\n",
        tries()
    ));
    if r.foreign > 0 {
        m.push_str(&format!(
            "- WARNING: {} measurement(s) were kept although another process had tracing BPF \
             links attached: treat this run's numbers with care.\n",
            r.foreign
        ));
    } else {
        m.push_str(
            "- No measurement was kept that ran alongside another process's tracing links.\n",
        );
    }
    m
}
