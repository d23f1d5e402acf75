//! The trap engine on this machine's kernel: real programs, real opens by
//! child processes, events read from the ring. Expected tiers come from what
//! the kernel offers (`support::tiers`), so the suite holds on any kernel
//! (`make test-vm` runs it on Debian's 6.1 too).

mod support;

use std::process::Command;

use kive::trap::{Hook, Tier, TierChoice};
use support::scenarios::{self, arm_by_key, audit};
use support::{engine, events_until, key_of, run, tiers, world_dir};

#[test]
fn auto_picks_the_best_tier_this_kernel_offers() {
    let offer = tiers::offer();
    let (e, _rx) = engine(TierChoice::Auto);
    assert_eq!(e.tier(), offer.best(), "{offer:#?}");
    assert_eq!(e.programs(), tiers::programs_of(e.tier()));
}

#[test]
fn the_lsm_tier_loads_only_where_bpf_is_an_active_lsm() {
    let offer = tiers::offer();
    if !offer.bpf_lsm_active() {
        assert!(!offer.loads(Tier::Lsm), "{offer:#?}");
    }
    // where lsm loads, fentry (same trampoline machinery) loads too
    if offer.loads(Tier::Lsm) {
        assert!(offer.bpf_lsm_active(), "{offer:#?}");
        assert!(offer.loads(Tier::Fentry), "{offer:#?}");
    }
    // the tracepoint tiers need no trampoline: every supported kernel has them
    assert!(offer.loads(Tier::Tracepoint), "{offer:#?}");
}

#[test]
fn cat_of_a_trapped_file_gives_exactly_one_event() {
    let (_t, ev, _) = scenarios::cat_of_a_trapped_file(TierChoice::Tracepoint, arm_by_key);
    assert_eq!(ev.hook, Hook::TpSysExit);
}

#[test]
fn an_untrapped_file_gives_no_event() {
    scenarios::an_untrapped_file_gives_no_event(TierChoice::Tracepoint, arm_by_key);
}

#[test]
fn a_write_gives_a_write_mask() {
    scenarios::write_then_append(TierChoice::Tracepoint, arm_by_key);
}

#[test]
fn access_as_another_uid_reports_that_uid() {
    scenarios::read_as_another_uid(TierChoice::Tracepoint, arm_by_key);
}

#[test]
fn exec_of_a_trapped_binary_is_reported() {
    let (_t, ev) = scenarios::exec_of_a_trapped_binary(TierChoice::Tracepoint, arm_by_key);
    assert_eq!(ev.hook, Hook::TpExec);
    assert_eq!(
        ev.comm(),
        "trapped-true",
        "comm after exec is the new program's"
    );
}

#[test]
fn the_loader_s_own_opens_never_fire() {
    scenarios::the_loader_s_own_opens_never_fire(TierChoice::Tracepoint, arm_by_key, false);
}

#[test]
fn disarm_stops_events_and_classic_tracepoints_also_work() {
    let (t, ev) = scenarios::disarm_stops_events(TierChoice::TracepointClassic, arm_by_key);
    assert_eq!(t.engine.tier(), Tier::TracepointClassic);
    assert_eq!(ev.hook, Hook::TpOpenat);
}

/// Forces `tier`: the engine that loaded, or the error.
fn forced(tier: Tier) -> Result<kive::trap::Engine, String> {
    let cfg = kive::trap::EngineConfig {
        tier: tiers::choice_of(tier),
        ..Default::default()
    };
    support::ensure_mounts();
    kive::trap::Engine::load(&cfg).map_err(|e| e.to_string())
}

#[test]
fn forcing_a_tier_loads_that_tier_or_is_an_error_with_the_log() {
    let offer = tiers::offer();
    for tier in [Tier::Lsm, Tier::Fentry, Tier::TracepointClassic] {
        match forced(tier) {
            Ok(e) => {
                assert!(offer.loads(tier), "{tier} loaded, the probe said no");
                assert_eq!(e.tier(), tier);
                assert_eq!(e.programs(), tiers::programs_of(tier));
            }
            Err(err) => {
                assert!(!offer.loads(tier), "{tier} refused now: {err}");
                assert!(err.contains(&format!("{tier} tier")), "{err}");
                if tier != Tier::Lsm || offer.bpf_lsm_active() {
                    assert!(
                        err.contains("libbpf"),
                        "the load error carries libbpf's log: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn forcing_fentry_tries_fentry_alone() {
    match forced(Tier::Fentry) {
        Ok(e) => assert_eq!(e.tier(), Tier::Fentry, "no other tier is loaded"),
        Err(err) => {
            assert!(err.contains("fentry tier"), "{err}");
            assert!(
                !err.contains("trampoline tier") && !err.contains("tracepoint"),
                "no other tier is tried: {err}"
            );
        }
    }
}

#[test]
fn forcing_trampoline_falls_back_to_fentry_only() {
    let offer = tiers::offer();
    match forced(Tier::Trampoline) {
        Ok(e) if offer.loads(Tier::Trampoline) => assert_eq!(e.tier(), Tier::Trampoline),
        Ok(e) => assert_eq!(e.tier(), Tier::Fentry, "fmod_ret refused: fentry observes"),
        Err(err) => {
            assert!(!offer.loads(Tier::Fentry), "{err}");
            assert!(
                err.contains("trampoline tier") && err.contains("fentry tier"),
                "{err}"
            );
            assert!(!err.contains("tracepoint"), "{err}");
        }
    }
}

#[test]
fn hits_are_counted_per_cpu_and_summed() {
    let d = world_dir();
    let f = d.path().join("counted");
    std::fs::write(&f, "x").expect("write");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&f);
    e.arm(key, audit(9)).expect("arm");
    for _ in 0..5 {
        run(Command::new("cat").arg(&f));
    }
    assert_eq!(events_until(&rx, key, 5).len(), 5);
    let s = e.kernel_stats();
    assert_eq!((s.hits, s.drops, s.blocked), (5, 0, 0));
}

#[test]
fn program_stats_count_each_attached_program_s_runs_while_enabled() {
    let d = world_dir();
    let f = d.path().join("free");
    std::fs::write(&f, "x").expect("write");
    let _on = kive::trap::stats::RunTimeStats::enable().expect("bpf run-time stats switch on");
    let (e, _rx) = engine(TierChoice::Tracepoint);
    let before = e.program_stats();
    let names: Vec<&str> = before.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, e.programs(), "one entry per attached program");
    for _ in 0..20 {
        run(Command::new("cat").arg(&f));
    }
    let after = e.program_stats();
    let sys_exit = |v: &[kive::trap::stats::ProgramStats]| {
        v.iter()
            .find(|p| p.name == "kive_tp_sys_exit")
            .map(|p| (p.run_cnt, p.run_time_ns))
            .expect("kive_tp_sys_exit listed")
    };
    let ((c0, t0), (c1, t1)) = (sys_exit(&before), sys_exit(&after));
    // 20 cats: each makes dozens of syscalls, every one runs sys_exit
    assert!(c1 >= c0 + 20 * 10, "runs counted: {c0} -> {c1}");
    assert!(t1 > t0, "run time counted: {t0} -> {t1}");
}

/// The wake-up policy: the reader is woken for the first record after it
/// caught up. With a poll period far longer than the test, each lone
/// access is still delivered (under the old policy, woken only past 64 KiB,
/// these events would wait for the hour-long poll), and each carries its
/// process's start time (the identity per-process caches key on).
#[test]
fn lone_accesses_wake_a_reader_that_never_polls() {
    support::ensure_mounts();
    let d = world_dir();
    let f = d.path().join("slow.txt");
    std::fs::write(&f, "s").expect("write");
    let cfg = kive::trap::EngineConfig {
        tier: TierChoice::Tracepoint,
        ..kive::trap::EngineConfig::default()
    };
    assert!(cfg.wakeup_bytes > 0, "the default batches wake-ups");
    let mut e = kive::trap::Engine::load(&cfg).expect("the tracepoint tier loads");
    let (tx, rx) = std::sync::mpsc::channel();
    e.start_reader(std::time::Duration::from_secs(3600), move |data| {
        let ev = kive::trap::RawEvent::decode(data).expect("kernel records decode");
        let _ = tx.send(ev);
    })
    .expect("ring reader starts");
    let key = key_of(&f);
    e.arm(key, audit(3)).expect("arm");
    let mut starts = Vec::new();
    // one access at a time, each waited for: the ring never holds more
    // than one record, far below the wake-up threshold
    for _ in 0..3 {
        let (pid, out) = run(Command::new("cat").arg(&f));
        assert!(out.status.success());
        let evs = events_until(&rx, key, 1);
        assert_eq!(evs.len(), 1, "one open, one event: {evs:#?}");
        assert_eq!(evs[0].tgid, pid);
        assert_ne!(evs[0].start_ns, 0, "the process's start time is captured");
        starts.push(evs[0].start_ns);
    }
    starts.dedup();
    assert_eq!(starts.len(), 3, "three processes, three start times");
    // stopping waits for the reader's poll to return: wake it with accesses
    let stopper = std::thread::spawn(move || drop(e));
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while !stopper.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader did not stop after {:?} of accesses",
            support::DEADLINE
        );
        run(Command::new("cat").arg(&f));
    }
    stopper.join().expect("the engine stops");
}
