//! Tests of [`super`]: the per-entry deadline, parallel parts, late results.

use super::*;
use std::sync::mpsc::sync_channel;

fn name(id: u32) -> String {
    format!("entry {id}")
}

fn late() -> Late {
    Arc::new(|_, r| r)
}

#[test]
fn a_batch_is_spread_by_size_and_cores() {
    assert_eq!(width(1, 2), 1, "one entry, one worker");
    assert_eq!(width(MIN_PART * 2 - 1, 2), 1, "a pod's change stays on one");
    assert_eq!(width(100_000, 2), 2, "a cold start on two cores");
    assert_eq!(width(100_000, 64), MAX_WIDTH, "bounded on a large machine");
    assert_eq!(width(100_000, 0), 1, "at least one");
}

#[test]
fn a_parallel_batch_runs_each_entry_once_on_several_workers() {
    let mut s = Stalls::new(Duration::from_secs(30), Arc::default());
    s.parallel = 2;
    let runs = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
    let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let (r2, t2) = (Arc::clone(&runs), Arc::clone(&threads));
    let work: Work = Arc::new(move |id| {
        *lock(&r2).entry(id).or_default() += 1;
        lock(&t2).insert(std::thread::current().id());
        Ok(id % 3 == 0)
    });
    let ids: Vec<u32> = (0..2_000).collect();
    let out = s.run_each(&ids, &work, &late(), &name);
    let want: Vec<(u32, Option<Result<bool, String>>)> =
        ids.iter().map(|&id| (id, Some(Ok(id % 3 == 0)))).collect();
    assert_eq!(out, want, "every entry's own result, once, in order");
    assert!(
        lock(&runs).values().all(|&n| n == 1) && lock(&runs).len() == ids.len(),
        "each entry ran exactly once"
    );
    assert_eq!(lock(&threads).len(), 2, "the batch ran on two workers");
}

#[test]
fn a_hung_entry_in_a_parallel_batch_stalls_only_itself_and_settles_late() {
    let mut s = Stalls::new(Duration::from_millis(50), Arc::default());
    s.parallel = 2;
    let (release, gate) = sync_channel::<()>(0);
    let gate = Mutex::new(gate);
    let work: Work = Arc::new(move |id| {
        if id == 10 {
            let _ = lock(&gate).recv();
        }
        Ok(true)
    });
    let (settled_tx, settled) = sync_channel::<u32>(1);
    let settled_tx = Mutex::new(settled_tx);
    let late: Late = Arc::new(move |id, r| {
        let _ = lock(&settled_tx).try_send(id);
        r.map(|_| false)
    });
    let ids: Vec<u32> = (0..1_000).collect();
    let out = s.run_each(&ids, &work, &late, &name);
    assert_eq!(out.len(), ids.len(), "every entry answered");
    let stalled: Vec<u32> = out
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(stalled, vec![10], "only the hung entry stalls");
    assert!(
        out.iter()
            .filter(|(id, _)| *id != 10)
            .all(|(_, r)| r == &Some(Ok(true))),
        "the others, in its part and the other part, ran"
    );
    release
        .send(())
        .expect("the stuck work waits for its release");
    let id = settled
        .recv_timeout(Duration::from_secs(60))
        .expect("the late result is settled on the worker");
    assert_eq!(id, 10, "the stalled entry's result is the one settled");
}

#[test]
fn results_come_in_order() {
    let s = Stalls::new(Duration::from_secs(30), Arc::default());
    let work: Work = Arc::new(|id| Ok(id % 2 == 0));
    let out = s.run_each(&[1, 2, 3], &work, &late(), &name);
    assert_eq!(
        out,
        vec![
            (1, Some(Ok(false))),
            (2, Some(Ok(true))),
            (3, Some(Ok(false)))
        ],
        "each entry's result, in order"
    );
    assert_eq!(s.count(), 0, "nothing stalled");
}

#[test]
fn a_hung_entry_stalls_alone_until_it_returns() {
    let s = Stalls::new(Duration::from_millis(50), Arc::default());
    let (release, gate) = sync_channel::<()>(0);
    let gate = Mutex::new(gate);
    let work: Work = Arc::new(move |id| {
        if id == 2 {
            // hangs until the test lets it go
            let _ = lock(&gate).recv();
        }
        Ok(true)
    });
    let out = s.run_each(&[1, 2, 3], &work, &late(), &name);
    assert_eq!(
        out,
        vec![(1, Some(Ok(true))), (2, None), (3, Some(Ok(true)))],
        "the hung entry is stalled, the one after it still runs"
    );
    assert_eq!((s.count(), s.total()), (1, 1), "the stall is counted");
    assert_eq!(
        s.run_each(&[4], &work, &late(), &name),
        vec![(4, Some(Ok(true)))],
        "the next call gets a worker that is not stuck"
    );
    let alone = Stalls::new(Duration::from_millis(50), Arc::default());
    assert_eq!(alone.run_each(&[2], &work, &late(), &name), vec![(2, None)]);
    assert_eq!(
        alone.run_each(&[5], &work, &late(), &name),
        vec![(5, Some(Ok(true)))],
        "a worker stuck on the last entry of its batch is not reused"
    );
    let again = s.run_each(&[2, 3], &work, &late(), &name);
    assert_eq!(
        again,
        vec![(2, None), (3, Some(Ok(true)))],
        "a stalled entry is skipped, not run twice"
    );
    release
        .send(())
        .expect("the stuck work waits for its release");
    release
        .send(())
        .expect("the second stuck work waits for its release");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.count() > 0 {
        assert!(Instant::now() < deadline, "the stalled entry never cleared");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.total(), 1, "the total stays");
}

/// Work that records each entry it ran and holds entry `held` until
/// `release` is sent (`started` says it got there).
struct Held {
    work: Work,
    ran: Arc<Mutex<std::collections::HashSet<u32>>>,
    started: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::SyncSender<()>,
}

fn held_on(held: u32) -> Held {
    let (release, gate) = sync_channel::<()>(0);
    let (started_tx, started) = sync_channel::<()>(1);
    let gate = Mutex::new(gate);
    let ran = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let ran2 = Arc::clone(&ran);
    let work: Work = Arc::new(move |id| {
        if id == held {
            let _ = started_tx.try_send(());
            let _ = lock(&gate).recv();
        }
        lock(&ran2).insert(id);
        Ok(true)
    });
    Held {
        work,
        ran,
        started,
        release,
    }
}

#[test]
fn closing_lets_the_entry_in_progress_finish() {
    let s = Arc::new(Stalls::new(Duration::from_secs(3600), Arc::default()));
    let Held {
        work,
        ran,
        started,
        release,
    } = held_on(1);
    let s2 = Arc::clone(&s);
    let caller = std::thread::spawn(move || s2.run_each(&[1, 2, 3, 4], &work, &late(), &name));
    started.recv().expect("the work starts");
    s.close();
    release.send(()).expect("the entry in progress finishes");
    let out = caller.join().expect("the caller returns");
    assert_eq!(out.len(), 4, "every entry answered: {out:?}");
    assert_eq!(
        out[0],
        (1, Some(Ok(true))),
        "the entry in progress finished"
    );
    // the worker may run on until the caller lets it go: what it ran is
    // reported done, what it did not is reported not run
    let ran = lock(&ran);
    assert!(
        out.iter().all(|(id, r)| r.is_some() == ran.contains(id)),
        "reported as run exactly what ran: {out:?}"
    );
    assert_eq!(s.count(), 0, "closing is not a stall");
}

/// On close, a worker that ran ahead of the caller (its part done while
/// the caller still waited on an earlier part) has its results counted:
/// what it armed is reported armed, never "not run".
#[test]
fn closing_counts_what_a_worker_ahead_already_did() {
    let mut s = Stalls::new(Duration::from_secs(3600), Arc::default());
    s.parallel = 2;
    let s = Arc::new(s);
    let Held {
        work,
        ran,
        started,
        release,
    } = held_on(0);
    // two parts: 0..1000 (held on its first entry) and 1000..2000
    let ids: Vec<u32> = (0..2_000).collect();
    let s2 = Arc::clone(&s);
    let caller = std::thread::spawn(move || s2.run_each(&ids, &work, &late(), &name));
    started.recv().expect("the first part starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(1_000..2_000).all(|id| lock(&ran).contains(&id)) {
        assert!(Instant::now() < deadline, "the second part never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
    s.close();
    release.send(()).expect("the entry in progress finishes");
    let out = caller.join().expect("the caller returns");
    assert_eq!(out.len(), 2_000, "every entry answered once");
    let ran = lock(&ran);
    for (id, r) in &out {
        assert_eq!(
            r.is_some(),
            ran.contains(id),
            "entry {id}: reported {r:?}, ran: {}",
            ran.contains(id)
        );
    }
}
