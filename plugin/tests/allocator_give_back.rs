//! kive's allocator gives back the pages another thread emptied: in its
//! own test binary (it frees 64 MiB and reads the process's RSS, which
//! another test's allocations would blur, and the byte counters of
//! `allocator.rs`'s tests would see its frees).

#[test]
fn a_thread_gives_back_the_pages_another_thread_emptied() {
    const MIB: u64 = 1 << 20;
    // an idle worker's pages whose blocks another thread freed stay
    // resident until the worker collects them: give_back does, forced
    // (a rescan pass, a reconcile) or not (a resolver's batch)
    for force in [false, true] {
        let (to_worker, jobs) = std::sync::mpsc::channel::<&'static str>();
        let (to_main, blocks) = std::sync::mpsc::channel::<Vec<Box<[u8; 1024]>>>();
        let worker = std::thread::spawn(move || {
            // 64 MiB in small blocks, touched, handed to the caller
            let v: Vec<Box<[u8; 1024]>> = (0..64 * 1024).map(|_| Box::new([7u8; 1024])).collect();
            to_main.send(v).expect("the caller waits for the blocks");
            jobs.recv().expect("the caller says when to give back");
            let before = kive::node::limits::rss_bytes();
            kive::allocator::give_back(force);
            let after = kive::node::limits::rss_bytes();
            (before, after)
        });
        let v = blocks.recv().expect("the worker's blocks");
        assert!(v.iter().all(|b| b[1023] == 7), "the blocks as written");
        drop(v); // freed by this thread, not the one that allocated them
        to_worker.send("collect").expect("the worker waits");
        let (before, after) = worker.join().expect("the worker ran");
        assert!(
            after + 32 * MIB <= before,
            "give_back({force}): RSS {} MiB before, {} MiB after: 64 MiB emptied by another thread not given back",
            before / MIB,
            after / MIB
        );
    }
}
