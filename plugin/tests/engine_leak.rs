//! Loading and closing the engine many times leaks no BPF program, map,
//! link or file descriptor (counted through /proc/self/fd).

mod support;

use std::collections::BTreeMap;

use kive::trap::{Engine, EngineConfig, TierChoice, TrapKey, TrapValue};

/// Open fds of this process by kind (`anon_inode:bpf-prog`, …, `other`).
fn fd_kinds() -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let kind = match std::fs::read_link(entry.path()) {
            Ok(t) => {
                let t = t.to_string_lossy().into_owned();
                if t.starts_with("anon_inode:") {
                    t
                } else {
                    "other".into()
                }
            }
            Err(_) => continue,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

#[test]
fn a_hundred_load_close_cycles_leak_nothing() {
    support::ensure_mounts();
    let cfg = EngineConfig {
        tier: TierChoice::Tracepoint,
        ..Default::default()
    };
    // one warm-up cycle: libbpf and the allocator set up process-wide state once
    drop(Engine::load(&cfg).expect("engine loads"));
    let before = fd_kinds();
    let mut peak_bpf = 0;
    for i in 0..100u32 {
        let mut e = Engine::load(&cfg).unwrap_or_else(|err| panic!("cycle {i}: {err}"));
        e.start_reader(std::time::Duration::from_millis(1), |_| {})
            .expect("reader");
        e.arm(
            TrapKey {
                dev: 1,
                ino: u64::from(i),
            },
            TrapValue {
                trap_id: i,
                block: false,
                conditions: 0,
            },
        )
        .expect("arm");
        let during = fd_kinds();
        peak_bpf = during
            .iter()
            .filter(|(k, _)| k.contains("bpf"))
            .map(|(_, v)| v)
            .sum::<usize>()
            .max(peak_bpf);
        drop(e);
    }
    let after = fd_kinds();
    assert!(
        peak_bpf >= 4,
        "while loaded the engine holds links and maps: {peak_bpf}"
    );
    assert_eq!(before, after, "fds by kind before and after 100 cycles");
}
