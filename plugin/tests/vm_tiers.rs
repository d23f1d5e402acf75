//! The LSM and trampoline tiers on a kernel that accepts them.
//!
//! The kernel running the tests may refuse trampoline-based BPF programs
//! (`lsm/*`, `fentry/*`, `fmod_ret/*`), so `vmtest/run.sh` boots Debian's own
//! 6.1 kernel under qemu (TCG) with a busybox initramfs holding the `kive`
//! binary built for this test, runs the scenarios of `vmtest/guest-init.sh`
//! and prints the serial console. This test judges that console: the guest's
//! `KIVE-VM-RESULT` lines (exit codes, EPERM, chosen tier) and, here on the
//! host, every alert kive printed (JSON parsed with serde_json).
//!
//! It never skips: a missing qemu, kernel package or a guest that does not
//! boot is a failure that says why. Run it alone with
//! `cargo test -p kive --test vm_tiers -- --nocapture`.

#[path = "support/vm.rs"]
mod vm;
#[path = "support/vm_alerts.rs"]
mod vm_alerts;

use std::path::Path;

use serde_json::Value;
use vm::{parse_results, run_vm, section};
use vm_alerts::{check_alerts, Expect, Failures, MAY_OPEN, MAY_READ, MAY_WRITE};

/// The guest's scenarios run on each of the lsm and trampoline tiers:
/// the suffix of their result names after the tier, and their steps.
const SCENARIOS: [(&str, &[&str]); 4] = [
    (
        "",
        &[
            "start",
            "block-eperm",
            "audit-open",
            "free-open",
            "alerts-seen",
            "exit",
        ],
    ),
    (
        ".ovl",
        &[
            "start",
            "read-real",
            "read-backing",
            "read-lower",
            "append",
            "copied-up",
            "read-upper",
            "block-eperm",
            "alerts-seen",
            "exit",
        ],
    ),
    (
        ".tamper",
        &[
            "start",
            "rename",
            "rescan-quiet-rename",
            "link",
            "rescan-quiet-link",
            "read-moved",
            "alerts-seen",
            "exit",
        ],
    ),
    (
        ".ka",
        &[
            "start",
            "block-eperm",
            "allow-source",
            "allow-alias",
            "allow-other",
            "allow-impostor",
            "readonly-read",
            "readonly-write",
            "readonly-intact",
            "alerts-seen",
            "exit",
        ],
    ),
];

#[test]
fn lsm_and_trampoline_tiers_load_report_and_block_in_debian_6_1() {
    let kive = Path::new(env!("CARGO_BIN_EXE_kive"));
    let run = run_vm(&[std::ffi::OsStr::new("--kive"), kive.as_os_str()], 300);
    let console = &run.console;
    assert!(
        run.status.success() && console.iter().any(|l| l.starts_with("KIVE-VM-DONE")),
        "the test VM did not run to the end (see the script's error below)\n{}",
        run.tail()
    );
    let results = parse_results(console);
    let mut f = Failures::default();

    let booted = console
        .iter()
        .find(|l| l.starts_with("KIVE-VM-BOOTED"))
        .cloned()
        .unwrap_or_default();
    f.check(booted.contains("bpf"), || {
        format!("BPF LSM is not active in the guest: {booted:?}")
    });

    let mut expected_results: Vec<String> = Vec::new();
    for tier in ["lsm", "trampoline"] {
        for (scenario, steps) in SCENARIOS {
            for step in steps {
                expected_results.push(format!("{tier}{scenario}.{step}"));
            }
        }
    }
    for step in ["start", "block-eperm", "exit"] {
        expected_results.push(format!("auto.{step}"));
    }
    for name in &expected_results {
        match results.get(name) {
            None => f.0.push(format!("{name}: no result line from the guest")),
            Some(r) => f.check(r.ok, || {
                format!("{name}: failed in the guest: {}", r.detail)
            }),
        }
    }
    // A failure the guest reported outside the expected list (e.g. insmod).
    for (name, r) in &results {
        f.check(r.ok || expected_results.contains(name), || {
            format!("{name}: failed in the guest: {}", r.detail)
        });
    }

    // The tier kive reported on its "armed=" line.
    for (name, want) in [
        ("lsm", "lsm"),
        ("trampoline", "trampoline"),
        ("lsm.ovl", "lsm"),
        ("trampoline.ovl", "trampoline"),
        ("lsm.ka", "lsm"),
        ("trampoline.ka", "trampoline"),
        ("auto", "lsm"),
    ] {
        let got = results
            .get(&format!("{name}.start"))
            .and_then(|r| r.field("tier"));
        f.check(got == Some(want), || {
            format!("{name}: kive started on tier {got:?}, expected {want}")
        });
    }

    for tier in ["lsm", "trampoline"] {
        // Plain files as root: one blocked, one audited; free.txt untrapped.
        check_alerts(
            &mut f,
            console,
            &results,
            tier,
            tier,
            "vm-block",
            &[
                Expect {
                    path: "/tmp/blocked.txt",
                    action: "block",
                    by: "block-eperm",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: "/tmp/audited.txt",
                    action: "audit",
                    by: "audit-open",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
            ],
        );
        // Through overlayfs as uid 65534: exactly one alert per open, keyed
        // on the overlay's inode so the trap survives the copy-up. A trap on
        // a real lower-layer file (peek.txt) alerts when that file is opened
        // directly but not for overlayfs's own second open of it, the backing
        // file, when /tmp/ovl/merged/peek.txt is read (no alert from
        // "read-backing" at all).
        let secret = "/tmp/ovl/merged/secret.txt";
        check_alerts(
            &mut f,
            console,
            &results,
            &format!("{tier}.ovl"),
            tier,
            "vm-overlay",
            &[
                Expect {
                    path: "/tmp/ovl/lower/peek.txt",
                    action: "audit",
                    by: "read-real",
                    uid: 65534,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: secret,
                    action: "audit",
                    by: "read-lower",
                    uid: 65534,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: secret,
                    action: "audit",
                    by: "append",
                    uid: 65534,
                    mask_bits: MAY_OPEN | MAY_WRITE,
                },
                Expect {
                    path: secret,
                    action: "audit",
                    by: "read-upper",
                    uid: 65534,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: "/tmp/ovl/merged/blocked.txt",
                    action: "block",
                    by: "block-eperm",
                    uid: 65534,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
            ],
        );
    }
    for tier in ["lsm", "trampoline"] {
        // KubeArmor rules: Block; Allow + fromSource (only the source's
        // inode, under either of its names, reads silently: busybox's own
        // cat and the impostor under the source's name are refused);
        // readOnly (the read is silent, the append refused). Exactly these
        // four alerts, each saying it blocked.
        let name = format!("{tier}.ka");
        let allowed = "/tmp/ka/allowed.txt";
        check_alerts(
            &mut f,
            console,
            &results,
            &name,
            tier,
            "vm-kubearmor",
            &[
                Expect {
                    path: "/tmp/ka/blocked.txt",
                    action: "block",
                    by: "block-eperm",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: allowed,
                    action: "block",
                    by: "allow-other",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: allowed,
                    action: "block",
                    by: "allow-impostor",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
                Expect {
                    path: "/tmp/ka/conf.txt",
                    action: "block",
                    by: "readonly-write",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_WRITE,
                },
            ],
        );
        for line in section(console, &format!("{name}.stdout"))
            .unwrap_or_default()
            .iter()
            .filter(|l| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            f.check(
                v.pointer("/kive-policy-severity").and_then(Value::as_u64) == Some(8)
                    && v.pointer("/kive-policy-message").and_then(Value::as_str)
                        == Some("kubearmor rule in the vm"),
                || format!("{name}: the rule's severity and message are not in the alert: {line}"),
            );
        }
    }
    for tier in ["lsm", "trampoline"] {
        // A trapped file renamed, then linked: each is one alert, from the
        // kernel's tamper hook, naming the process and the new name (the
        // rescan saw both and stayed quiet); the moved inode is still
        // trapped.
        let name = format!("{tier}.tamper");
        let secret = "/tmp/tamper/secret.txt";
        let tamper = |by| Expect {
            path: secret,
            action: "audit",
            by,
            uid: 0,
            mask_bits: 0,
        };
        check_alerts(
            &mut f,
            console,
            &results,
            &name,
            tier,
            "vm-tamper",
            &[
                tamper("rename"),
                tamper("link"),
                Expect {
                    path: secret,
                    action: "audit",
                    by: "read-moved",
                    uid: 0,
                    mask_bits: MAY_OPEN | MAY_READ,
                },
            ],
        );
        let lines = section(console, &format!("{name}.stdout")).unwrap_or_default();
        let alerts: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        for (i, (kind, hook, new_path)) in [
            ("rename", "inode_rename", "/tmp/tamper/moved.txt"),
            ("link", "inode_link", "/tmp/tamper/linked.txt"),
        ]
        .into_iter()
        .enumerate()
        {
            let at = |p: &str| {
                alerts
                    .get(i)
                    .and_then(|v| v.pointer(p))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let shown = || format!("{:?}", alerts.get(i));
            f.check(at("/metadata/tamper/kind") == kind, || {
                format!("{name}: alert #{i} is not a {kind} tamper: {}", shown())
            });
            f.check(at("/metadata/hook").ends_with(hook), || {
                format!(
                    "{name}: the {kind} was not seen by the kernel hook: {}",
                    shown()
                )
            });
            f.check(at("/metadata/tamper/old-path") == secret, || {
                format!(
                    "{name}: the {kind} alert does not name the trap's path: {}",
                    shown()
                )
            });
            f.check(at("/metadata/tamper/new-path") == new_path, || {
                format!("{name}: the {kind} alert's new path (from the kernel event) is not {new_path}: {}", shown())
            });
        }
    }
    check_alerts(
        &mut f,
        console,
        &results,
        "auto",
        "lsm",
        "vm-block",
        &[Expect {
            path: "/tmp/blocked.txt",
            action: "block",
            by: "block-eperm",
            uid: 0,
            mask_bits: MAY_OPEN | MAY_READ,
        }],
    );

    // Kernel warnings while kive ran (the guest clears the log at start).
    if let Some(dmesg) = section(console, "dmesg") {
        let bad: Vec<&String> = dmesg
            .iter()
            .filter(|l| {
                ["WARNING", "BUG", "Oops", "Call Trace"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        f.check(bad.is_empty(), || {
            format!("guest kernel warnings:\n{}", dmesg.join("\n"))
        });
    } else {
        f.0.push("no dmesg section in the console".into());
    }

    assert!(
        f.0.is_empty(),
        "{} check(s) failed in the 6.1 VM:\n  - {}\n{}",
        f.0.len(),
        f.0.join("\n  - "),
        run.tail()
    );
    println!(
        "vm_tiers: {} guest results ok, VM run took {:.0?} (kernel {})",
        results.len(),
        run.elapsed,
        booted
    );
}
