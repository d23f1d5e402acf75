//! What the engine bench and the VM BPF-stats bench share: the child
//! process that opens and closes a file in a timed loop (this same bench
//! binary re-executed with `--child-open-loop PATH --child-count N
//! --child-warmup N [--child-tune]`), random trap keys, pinning a file, and
//! the statistics of the tables. Included with `#[path]` (a bench is its own
//! crate); each bench uses part of it.
#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kive::trap::TrapKey;

/// The child's role on the bench's command line (`#[command(flatten)]`
/// into the bench's own arguments), as [`spawn_open_loop`] passes it.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
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

impl ChildArgs {
    /// Runs the child's loop ([`child_open_loop`]) when this process is
    /// the child: its outcome; `None` in the bench itself.
    pub fn run(&self) -> Option<Result<(), String>> {
        let path = self.child_open_loop.as_deref()?;
        Some(
            child_open_loop(path, self.child_count, self.child_warmup, self.child_tune)
                .map_err(|e| format!("open loop child: {}: {e}", path.display())),
        )
    }
}

/// An `O_PATH` fd of a file and its trap key.
pub fn pin_file(path: &Path) -> Result<(OwnedFd, TrapKey), String> {
    let abs = std::fs::canonicalize(path)
        .map_err(|e| format!("canonicalizing {}: {e}", path.display()))?;
    let fd = rustix::fs::open(
        &abs,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("pinning {}: {e}", abs.display()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("stat {}: {e}", abs.display()))?;
    Ok((
        fd,
        TrapKey {
            dev: kive::trap::dev::kernel_dev(st.st_dev),
            ino: st.st_ino,
        },
    ))
}

/// xorshift64*: keys that differ from run to run without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the child reports about its timed loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopTimes {
    /// CLOCK_MONOTONIC ns at the start of the loop.
    pub start: u64,
    /// CLOCK_MONOTONIC ns at its end.
    pub end: u64,
    /// The child's own CPU time (user + system) over the loop, in ns.
    pub cpu: u64,
    /// Whether nice -20 and pinning both took effect.
    pub tuned: bool,
}

/// Spawns this binary as the child that opens `path` `count` times.
pub fn spawn_open_loop(
    path: &Path,
    count: u64,
    warmup: u64,
    tune: bool,
) -> Result<LoopTimes, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the bench binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child-open-loop")
        .arg(path)
        .arg("--child-count")
        .arg(count.to_string())
        .arg("--child-warmup")
        .arg(warmup.to_string());
    if tune {
        cmd.arg("--child-tune");
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawning the open loop: {e}"))?;
    if !out.status.success() {
        return Err(format!("the open loop failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(str::parse::<u64>)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("unexpected open loop output {text:?}"))?;
    match v[..] {
        [start, end, cpu, tuned] if end >= start => Ok(LoopTimes {
            start,
            end,
            cpu,
            tuned: tuned == 1,
        }),
        _ => Err(format!("unexpected open loop output {text:?}")),
    }
}

pub fn clock_ns(id: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn monotonic_ns() -> u64 {
    clock_ns(rustix::time::ClockId::Monotonic)
}

/// nice -20 and pinned to the last CPU: on a shared machine the measuring
/// child then keeps one CPU to itself. Returns whether both took effect.
pub fn tune_child() -> bool {
    let niced = rustix::process::setpriority_process(None, -20).is_ok();
    let last = std::thread::available_parallelism()
        .map_or(0, |n| n.get() - 1)
        .min(1023);
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is valid
    // (it is what CPU_ZERO produces).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; `last` < CPU_SETSIZE (1024).
    unsafe { libc::CPU_SET(last, &mut set) };
    // SAFETY: `set` is an initialised cpu_set_t and the size passed is its
    // own; pid 0 is the calling thread.
    let pinned =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0;
    niced && pinned
}

pub fn open_close(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string that lives across the
    // call; open(2) does not keep the pointer.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2), nothing else owns it, and it
    // is closed exactly once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The child: `warmup` untimed then `count` timed open+close of `path`;
/// prints the CLOCK_MONOTONIC ns at the start and end of the timed loop,
/// the CPU time the loop took and whether tuning took effect.
pub fn child_open_loop(path: &Path, count: u64, warmup: u64, tune: bool) -> io::Result<()> {
    let tuned = tune && tune_child();
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    for _ in 0..warmup {
        open_close(&c)?;
    }
    let cpu0 = clock_ns(rustix::time::ClockId::ThreadCPUTime);
    let start = monotonic_ns();
    for _ in 0..count {
        open_close(&c)?;
    }
    let end = monotonic_ns();
    let cpu = clock_ns(rustix::time::ClockId::ThreadCPUTime) - cpu0;
    println!("{start} {end} {cpu} {}", u8::from(tuned));
    Ok(())
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

pub fn pct(ratio: f64) -> String {
    format!("{:+.1} %", (ratio - 1.0) * 100.0)
}
