//! How `vm_tiers` judges what kive printed in the guest: each expected
//! alert, in order, from the expected process, with the tier's hook, and
//! nothing else; failures are collected, not stopped at.

use std::collections::HashMap;

use serde_json::Value;

use super::vm::{section, GuestResult};

/// A parsed alert plus the raw line, for messages.
pub struct Alert {
    json: Value,
    raw: String,
}

impl Alert {
    pub fn str_at(&self, pointer: &str) -> &str {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn u64_at(&self, pointer: &str) -> Option<u64> {
        self.json.pointer(pointer).and_then(Value::as_u64)
    }
}

/// Collects failures instead of stopping at the first one.
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn check(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.0.push(msg());
        }
    }
}

/// Which hook names a tier may report.
fn hook_fits(tier: &str, hook: &str) -> bool {
    match tier {
        "lsm" => hook.starts_with("lsm/"),
        // Blocking on the trampoline tier needs fmod_ret; fentry only observes.
        "trampoline" => hook.starts_with("fmod_ret/") || hook.starts_with("fentry/"),
        _ => false,
    }
}

/// An expected alert: one open by a known process.
pub struct Expect<'a> {
    pub path: &'a str,
    pub action: &'a str,
    /// The guest result whose `pid=` made the open.
    pub by: &'a str,
    pub uid: u64,
    /// Bits of metadata.mask that must be set (kernel MAY_* values).
    pub mask_bits: u64,
}

pub const MAY_WRITE: u64 = 2;
pub const MAY_READ: u64 = 4;
pub const MAY_OPEN: u64 = 32;

/// Parses section `<name>.stdout` and checks that it holds exactly the
/// expected alerts, in order, each from the expected process, and nothing
/// else (no alert for an untrapped file, no duplicate per open).
pub fn check_alerts(
    f: &mut Failures,
    console: &[String],
    results: &HashMap<String, GuestResult>,
    name: &str,
    tier: &str,
    policy: &str,
    expected: &[Expect<'_>],
) {
    let Some(lines) = section(console, &format!("{name}.stdout")) else {
        f.0.push(format!("{name}: no stdout section in the console"));
        return;
    };
    let mut alerts = Vec::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(json) if json.is_object() => alerts.push(Alert {
                json,
                raw: line.clone(),
            }),
            _ => {
                f.0.push(format!("{name}: stdout line is not a JSON object: {line}"))
            }
        }
    }
    let listing = || {
        alerts
            .iter()
            .map(|a| format!("    {}", a.raw))
            .collect::<Vec<_>>()
            .join("\n")
    };
    f.check(alerts.len() == expected.len(), || {
        format!(
            "{name}: {} alerts, expected {} ({}):\n{}",
            alerts.len(),
            expected.len(),
            expected
                .iter()
                .map(|e| e.path)
                .collect::<Vec<_>>()
                .join(", "),
            listing()
        )
    });
    for a in &alerts {
        let path = a.str_at("/metadata/path");
        f.check(expected.iter().any(|e| e.path == path), || {
            format!("{name}: alert for a path without a trap: {}", a.raw)
        });
        f.check(a.str_at("/kive-alert-version") == "v1", || {
            format!("{name}: kive-alert-version is not \"v1\": {}", a.raw)
        });
        f.check(a.str_at("/kive-policy-name") == policy, || {
            format!("{name}: kive-policy-name is not {policy:?}: {}", a.raw)
        });
        f.check(!a.str_at("/metadata/kernel-id").is_empty(), || {
            format!("{name}: empty metadata.kernel-id: {}", a.raw)
        });
        f.check(a.u64_at("/metadata/inode").is_some_and(|i| i > 0), || {
            format!("{name}: no metadata.inode: {}", a.raw)
        });
        let hook = a.str_at("/metadata/hook");
        f.check(hook_fits(tier, hook), || {
            format!(
                "{name}: hook {hook:?} does not belong to tier {tier}: {}",
                a.raw
            )
        });
    }
    for (i, e) in expected.iter().enumerate() {
        let Some(a) = alerts.get(i) else { break };
        let want_pid = results
            .get(&format!("{name}.{}", e.by))
            .and_then(|r| r.field("pid"));
        let want_pid: Option<u64> = want_pid.and_then(|p| p.parse().ok());
        f.check(a.str_at("/metadata/path") == e.path, || {
            format!("{name}: alert #{i} is not for {}:\n{}", e.path, listing())
        });
        f.check(a.str_at("/metadata/action") == e.action, || {
            format!(
                "{name}: alert for {} ({}) has action {:?}, expected {:?}: {}",
                e.path,
                e.by,
                a.str_at("/metadata/action"),
                e.action,
                a.raw
            )
        });
        f.check(
            want_pid.is_some() && a.u64_at("/process/pid") == want_pid,
            || {
                format!(
                    "{name}: alert for {} ({}) has process.pid {:?}, the opener was {:?}: {}",
                    e.path,
                    e.by,
                    a.u64_at("/process/pid"),
                    want_pid,
                    a.raw
                )
            },
        );
        f.check(a.u64_at("/process/uid") == Some(e.uid), || {
            format!(
                "{name}: alert for {} ({}) has process.uid {:?}, expected {}: {}",
                e.path,
                e.by,
                a.u64_at("/process/uid"),
                e.uid,
                a.raw
            )
        });
        // process details captured in the kernel on this tier too
        for key in ["binary", "cwd", "parent-binary"] {
            let v = a.str_at(&format!("/process/{key}"));
            f.check(v.starts_with('/'), || {
                format!(
                    "{name}: alert for {} ({}) has process.{key} {v:?}, not a captured path: {}",
                    e.path, e.by, a.raw
                )
            });
        }
        f.check(!a.str_at("/process/arguments").is_empty(), || {
            format!(
                "{name}: alert for {} ({}) has no process.arguments: {}",
                e.path, e.by, a.raw
            )
        });
        let mask = a.u64_at("/metadata/mask").unwrap_or(0);
        f.check(mask & e.mask_bits == e.mask_bits, || {
            format!(
                "{name}: alert for {} ({}) has mask {mask}, expected bits {}: {}",
                e.path, e.by, e.mask_bits, a.raw
            )
        });
    }
}
