//! The trap engine on this machine's kernel: real programs, real opens by
//! child processes, events read from the ring. Expected tiers come from what
//! the kernel offers (`support::tiers`), so the suite holds on any kernel
//! (`make test-vm` runs it on Debian's 6.1 too).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use kive::trap::{Action, Hook, Tier, TierChoice, TrapValue};
use support::{engine, events_for, events_until, key_of, quiet, run, tiers, world_dir};

fn audit(id: u32) -> TrapValue {
    TrapValue {
        trap_id: id,
        block: false,
        conditions: 0,
    }
}

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
    let d = world_dir();
    let f = d.path().join("secret.txt");
    std::fs::write(&f, "s3cr3t").expect("write");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&f);
    e.arm(key, audit(7)).expect("arm");
    let (pid, out) = run(Command::new("cat").arg(&f));
    assert!(out.status.success());
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "one open, one event: {evs:#?}");
    let ev = &evs[0];
    assert_eq!(ev.tgid, pid, "the cat's pid");
    assert_eq!(ev.pid, pid, "single-threaded cat: tid == pid");
    assert_eq!(ev.uid, 0);
    assert_eq!(ev.comm, "cat");
    assert_eq!(ev.mask, 0x20 | 0x4, "MAY_OPEN|MAY_READ");
    assert_eq!(ev.trap_id, 7);
    assert_eq!(ev.hook, Hook::TpSysExit);
    assert_eq!(ev.action, Action::Audit);
    assert_eq!(ev.ppid, std::process::id(), "parent is the test process");
    let me = std::env::current_exe().expect("test binary");
    assert_eq!(
        ev.parent_exe,
        me.display().to_string(),
        "the parent's executable, captured in the kernel"
    );
    assert_ne!(ev.cgroup_id, 0);
    assert_ne!(ev.mnt_ns, 0);
}

#[test]
fn an_untrapped_file_gives_no_event() {
    let d = world_dir();
    let trapped = d.path().join("trapped");
    let free = d.path().join("free");
    std::fs::write(&trapped, "t").expect("write");
    std::fs::write(&free, "f").expect("write");
    let (e, rx) = engine(TierChoice::Tracepoint);
    e.arm(key_of(&trapped), audit(1)).expect("arm");
    run(Command::new("cat").arg(&free));
    let free_key = key_of(&free);
    assert!(events_for(&rx, free_key, quiet()).is_empty());
    assert_eq!(e.kernel_stats().hits, 0, "no hit counted");
}

#[test]
fn a_write_gives_a_write_mask() {
    let d = world_dir();
    let f = d.path().join("log");
    std::fs::write(&f, "").expect("write");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&f);
    e.arm(key, audit(2)).expect("arm");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("echo x > {}", f.display())));
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("echo y >> {}", f.display())));
    let evs = events_until(&rx, key, 2);
    let masks: Vec<u32> = evs.iter().map(|e| e.mask).collect();
    assert_eq!(masks, [0x20 | 0x2, 0x20 | 0x2 | 0x8], "write, then append");
    assert_eq!(evs[0].comm, "sh");
}

#[test]
fn access_as_another_uid_reports_that_uid() {
    let d = world_dir();
    let f = d.path().join("shared.txt");
    std::fs::write(&f, "x").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&f);
    e.arm(key, audit(3)).expect("arm");
    let (pid, out) = run(Command::new("cat").arg(&f).uid(65534).gid(65534));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!((evs[0].uid, evs[0].gid, evs[0].tgid), (65534, 65534, pid));
}

#[test]
fn exec_of_a_trapped_binary_is_reported() {
    let d = world_dir();
    // named `true`: where /bin/true is busybox, the copy must keep an
    // applet's name to run
    let bin = d.path().join("true");
    std::fs::copy("/bin/true", &bin).expect("copy /bin/true");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&bin);
    e.arm(key, audit(4)).expect("arm");
    let (pid, out) = run(&mut Command::new(&bin));
    assert!(out.status.success());
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].hook, Hook::TpExec);
    assert_eq!(evs[0].mask, 0x20 | 0x1, "MAY_OPEN|MAY_EXEC");
    assert_eq!(evs[0].tgid, pid);
    assert_eq!(evs[0].comm, "true", "comm after exec is the new program");
}

#[test]
fn the_loader_s_own_opens_never_fire() {
    let d = world_dir();
    let f = d.path().join("own");
    std::fs::write(&f, "x").expect("write");
    let (e, rx) = engine(TierChoice::Tracepoint);
    let key = key_of(&f);
    e.arm(key, audit(5)).expect("arm");
    // this process is the loader: its reads are not reported
    let _ = std::fs::read(&f).expect("read");
    assert!(events_for(&rx, key, quiet()).is_empty());
    assert_eq!(e.kernel_stats().hits, 0);
}

#[test]
fn disarm_stops_events_and_classic_tracepoints_also_work() {
    let d = world_dir();
    let f = d.path().join("f");
    std::fs::write(&f, "x").expect("write");
    let (e, rx) = engine(TierChoice::TracepointClassic);
    assert_eq!(e.tier(), Tier::TracepointClassic);
    let key = key_of(&f);
    e.arm(key, audit(6)).expect("arm");
    run(Command::new("cat").arg(&f));
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].hook, Hook::TpOpenat);
    e.disarm(key).expect("disarm");
    assert!(e.armed_keys().is_empty());
    run(Command::new("cat").arg(&f));
    assert!(
        events_for(&rx, key, quiet()).is_empty(),
        "disarmed key is silent"
    );
    e.disarm(key).expect("disarming twice is not an error");
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
