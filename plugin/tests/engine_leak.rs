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

/// 100 load/arm/read/close cycles of one tier; returns the peak number of
/// the tier's own fds seen while loaded.
fn cycles(tier: TierChoice, own: &str) -> usize {
    let cfg = EngineConfig {
        tier,
        ..Default::default()
    };
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let pin = std::fs::File::open(file.path()).expect("open");
    let arm = |e: &Engine, i: u32| {
        let key = TrapKey {
            dev: 1,
            ino: u64::from(i),
        };
        let value = TrapValue {
            trap_id: i,
            block: false,
            conditions: 0,
        };
        // the fanotify tier marks the file itself; the eBPF tiers take the key
        e.arm_file(std::os::fd::AsFd::as_fd(&pin), key, value)
            .expect("arm");
    };
    // one warm-up cycle: libbpf and the allocator set up process-wide state once
    drop(Engine::load(&cfg).expect("engine loads"));
    let before = fd_kinds();
    let mut peak = 0;
    for i in 0..100u32 {
        let mut e = Engine::load(&cfg).unwrap_or_else(|err| panic!("{tier:?} cycle {i}: {err}"));
        e.start_reader(std::time::Duration::from_millis(1), |_| {})
            .expect("reader");
        arm(&e, i);
        let during = fd_kinds();
        peak = during
            .iter()
            .filter(|(k, _)| k.contains(own))
            .map(|(_, v)| v)
            .sum::<usize>()
            .max(peak);
        drop(e);
    }
    let after = fd_kinds();
    assert_eq!(
        before, after,
        "{tier:?}: fds by kind before and after 100 cycles"
    );
    peak
}

#[test]
fn a_hundred_load_close_cycles_leak_nothing() {
    support::ensure_mounts();
    // one test, tiers in turn: fds are counted process-wide
    let peak_bpf = cycles(TierChoice::Tracepoint, "bpf");
    assert!(
        peak_bpf >= 4,
        "while loaded the engine holds links and maps: {peak_bpf}"
    );
    let peak_fan = cycles(TierChoice::Fanotify, "fanotify");
    assert_eq!(
        peak_fan, 1,
        "while loaded the fanotify tier holds its group"
    );
}
