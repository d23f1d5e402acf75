//! The kernel test suite on Debian's 6.1 kernel too, not only on the
//! machine running `cargo test`: the kernel test binaries ([`SUITE`], built
//! here by cargo, as this test is) are copied into the vmtest initramfs
//! with their shared libraries and run in the guest with
//! `--test-threads=1`. This test judges libtest's summary of
//! each: every test the binary lists here passed there, none failed or was
//! ignored or filtered out.
//!
//! The guest is emulated (TCG): its tests watch 10x longer for events that
//! must not come (`KIVE_TEST_TIME_SCALE`, see `support::quiet`). It never
//! skips: a missing qemu or kernel package fails with the script's reason.
//! Run it alone with `cargo test -p kive --test vm_suite -- --nocapture`.

mod falco_common;
#[path = "support/vm.rs"]
mod vm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use vm::{parse_results, run_vm, section};

/// The test binaries run in the guest: every test file that needs the
/// kernel.
const SUITE: [&str; 22] = [
    "arm_batch_kernel",
    "attack_kernel",
    "cli_kernel",
    "cluster_kernel",
    "cluster_scope_kernel",
    "container_kernel",
    "decoy_kernel",
    "drills_cluster",
    "drills_container",
    "drills_kernel",
    "engine_kernel",
    "engine_leak",
    "falco_live",
    "fanotify_kernel",
    "kubearmor_kernel",
    "pidns_kernel",
    "pod_delta_kernel",
    "reading_kernel",
    "reading_tamper_kernel",
    "redirect_kernel",
    "rescan_kernel",
    "runtime_kernel",
];

/// Test files that need no kernel feature (they run on any machine as they
/// are): not shipped into the guest. Only `drills_*` and `*_kernel` files
/// are checked against these lists.
const NOT_KERNEL: [&str; 1] = ["drills_callback"];

/// Every test file named as a kernel test or a drill is in the VM suite or
/// named above: a new kernel test file cannot be left out of Debian 6.1 by
/// forgetting it here.
#[test]
fn every_kernel_test_file_is_in_the_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let name = e.expect("dir entry").file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".rs")) else {
            continue;
        };
        let kernel = stem.ends_with("_kernel") || stem.starts_with("drills_");
        if kernel && !SUITE.contains(&stem) && !NOT_KERNEL.contains(&stem) {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "kernel test files not in vm_suite's SUITE: {missing:?}"
    );
}

/// The executables of the suite's test targets, as cargo built them (a
/// no-op build: this test's own `cargo test` built them already).
fn test_binaries() -> Vec<(String, PathBuf)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = falco_common::cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json",
        "--manifest-path",
    ])
    .arg(&manifest);
    for t in SUITE {
        cmd.args(["--test", t]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo test --no-run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if msg["reason"] == "compiler-artifact" && SUITE.contains(&name) {
            if let Some(exe) = msg["executable"].as_str() {
                bins.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    bins.sort();
    assert_eq!(
        bins.len(),
        SUITE.len(),
        "one executable per target: {bins:?}"
    );
    bins
}

/// How many tests a binary holds (`--list` on the host).
fn listed(bin: &Path) -> usize {
    let out = Command::new(bin)
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count()
}

/// libtest's `test result: ok. N passed; F failed; I ignored; M measured;
/// X filtered out` line: (ok, passed, failed, ignored, filtered).
fn summary(lines: &[String]) -> Option<(bool, usize, usize, usize, usize)> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("test result: "))?;
    let ok = line.starts_with("test result: ok.");
    let num = |word: &str| -> Option<usize> {
        let words: Vec<&str> = line
            .split([' ', ';', '.'])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some((
        ok,
        num("passed")?,
        num("failed")?,
        num("ignored")?,
        num("filtered")?,
    ))
}

#[test]
fn the_kernel_test_suite_passes_in_debian_6_1() {
    let bins = test_binaries();
    let mut args: Vec<OsString> = vec![
        "--kive".into(),
        env!("CARGO_BIN_EXE_kive").into(),
        // falco_live loads it; the guest has no cargo to build it
        "--lib".into(),
        falco_common::built_so().into(),
    ];
    for (_, b) in &bins {
        args.push("--test-bin".into());
        args.push(b.clone().into_os_string());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(OsString::as_os_str).collect();
    // about 20 minutes on 2 busy cores; room for a busier machine
    let run = run_vm(&refs, 3600);
    eprintln!("vmtest/run.sh took {:.0?}", run.elapsed);
    assert!(
        run.status.success() && run.console.iter().any(|l| l.starts_with("KIVE-VM-DONE")),
        "the test VM did not run to the end\n{}",
        run.tail()
    );
    let results = parse_results(&run.console);
    let mut failures = Vec::new();
    // the guest's own setup (the overlay and fuse modules, /dev/fuse)
    for (name, r) in &results {
        let is_binary = bins.iter().any(|(b, _)| *name == format!("suite.{b}"));
        if !r.ok && !is_binary {
            failures.push(format!("guest setup {name}: {}", r.detail));
        }
    }
    for (name, bin) in &bins {
        let want = listed(bin);
        let key = format!("suite.{name}");
        let out = section(&run.console, &key).unwrap_or_default();
        let verdict = results.get(&key).map(|r| (r.ok, r.detail.clone()));
        match (summary(out), verdict) {
            (Some((true, passed, 0, 0, 0)), Some((true, _))) if passed == want && want > 0 => {}
            (sum, verdict) => failures.push(format!(
                "{name}: want {want} passed, got summary {sum:?}, result {verdict:?}\n--- its output in the guest:\n{}",
                out.join("\n")
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "the kernel suite in Debian 6.1:\n{}\n{}",
        failures.join("\n\n"),
        run.tail()
    );
}
