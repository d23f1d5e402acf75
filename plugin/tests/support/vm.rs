//! Running `vmtest/run.sh` (Debian's 6.1 kernel under qemu) from a test
//! and reading the guest's console: shared by `vm_tiers` (the tier
//! scenarios) and `vm_suite` (the kernel test binaries in the guest).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the script beyond qemu's own limit: installing qemu
/// and downloading the kernel on a cold cache.
pub const SCRIPT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How many console lines a failure message quotes.
pub const TAIL_LINES: usize = 80;

/// What one run of `vmtest/run.sh` produced.
pub struct VmRun {
    pub status: ExitStatus,
    pub elapsed: Duration,
    /// The script's stdout: the guest console plus `KIVE-VM-HOST` lines.
    pub console: Vec<String>,
    /// The script's stderr: apt, cache and qemu diagnostics.
    pub log: String,
}

impl VmRun {
    pub fn tail(&self) -> String {
        let start = self.console.len().saturating_sub(TAIL_LINES);
        format!(
            "--- vmtest/run.sh exited {} after {:.0?}\n--- its stderr:\n{}\n--- last {} console lines:\n{}",
            self.status,
            self.elapsed,
            self.log.trim_end(),
            self.console.len() - start,
            self.console[start..].join("\n")
        )
    }
}

/// Runs the script in its own process group so a deadline can kill qemu too.
/// Runs `vmtest/run.sh ARGS`; qemu is killed after `timeout_s` seconds.
pub fn run_vm(args: &[&OsStr], timeout_s: u32) -> VmRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmtest/run.sh");
    assert!(script.is_file(), "{} is missing", script.display());
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .args(args)
        .env("KIVE_VMTEST_TIMEOUT", timeout_s.to_string())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start bash {}: {e}", script.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for vmtest/run.sh") {
            break status;
        }
        if started.elapsed() > SCRIPT_DEADLINE + Duration::from_secs(timeout_s.into()) {
            // The group id is the child's pid (process_group(0)); "-PID"
            // names the whole group: bash, timeout and qemu.
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            let log = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!(
                "vmtest/run.sh still running after {:?}: killed\n{}",
                started.elapsed(),
                log.trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    VmRun {
        status,
        elapsed: started.elapsed(),
        // The serial line ends lines with "\r\n".
        console: read(&out_path)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect(),
        log: read(&err_path),
    }
}

/// One `KIVE-VM-RESULT name=N ok=0|1 detail=...` line.
pub struct GuestResult {
    pub ok: bool,
    pub detail: String,
}

impl GuestResult {
    /// The value of a `key=value` word of the detail (e.g. `pid`).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.detail
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

pub fn parse_results(console: &[String]) -> HashMap<String, GuestResult> {
    let mut out = HashMap::new();
    for line in console {
        let Some(rest) = line.strip_prefix("KIVE-VM-RESULT name=") else {
            continue;
        };
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (ok, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        out.insert(
            name.to_string(),
            GuestResult {
                ok: ok == "ok=1",
                detail: detail.strip_prefix("detail=").unwrap_or(detail).to_string(),
            },
        );
    }
    out
}

/// The lines between `KIVE-VM-BEGIN name=N` and `KIVE-VM-END name=N`.
pub fn section<'a>(console: &'a [String], name: &str) -> Option<&'a [String]> {
    let begin = format!("KIVE-VM-BEGIN name={name}");
    let end = format!("KIVE-VM-END name={name}");
    let start = console.iter().position(|l| *l == begin)? + 1;
    let len = console[start..].iter().position(|l| *l == end)?;
    Some(&console[start..start + len])
}
