//! One instance's kept values against other instances, other threads and
//! reused event numbers (the guarantees of [`crate::falco::kept`]).

use super::*;

// SAFETY: the plugin API lets any thread call an instance, one call at a
// time: the tests below never call one instance from two threads at once.
unsafe impl Send for Plugin {}
// SAFETY: as above (shared only to take turns or to be dropped).
unsafe impl Sync for Plugin {}

/// Two events of the same length (`kive.path`, `kive.process.pid`,
/// `kive.process.comm` told apart), the three fields' ids, and each
/// event's values of them.
#[allow(clippy::type_complexity)]
fn twins() -> ([Vec<u8>; 2], [usize; 3], [[Value; 3]; 2]) {
    let id = |name: &str| FIELDS.iter().position(|f| f.name == name).expect(name);
    let alert = |p: &str, pid: i32, comm: &str| {
        let mut a = full_alert();
        a.metadata.path = p.into();
        a.process.pid = pid;
        a.process.comm = comm.into();
        event(&a)
    };
    let (ea, eb) = (
        alert("/secret-a.txt", 111, "cat"),
        alert("/secret-b.txt", 222, "dog"),
    );
    assert_eq!(ea.len(), eb.len(), "the same length: only the event tells");
    let values = |p: &[u8], pid, comm: &[u8]| {
        [
            Value::Str(p.to_vec()),
            Value::U64(pid),
            Value::Str(comm.to_vec()),
        ]
    };
    (
        [ea, eb],
        [
            id("kive.path"),
            id("kive.process.pid"),
            id("kive.process.comm"),
        ],
        [
            values(b"/secret-a.txt", 111, b"cat"),
            values(b"/secret-b.txt", 222, b"dog"),
        ],
    )
}

#[test]
fn values_stay_valid_until_the_instances_next_event_whatever_other_instances_do() {
    let ([ea, eb], ids, [a, b]) = twins();
    let (one, two) = (Plugin::new(), Plugin::new());
    let mut buf = ea.clone();
    // instance one's event 5: the requests kept as libsinsp's cache does
    let kept: Vec<_> = ids
        .iter()
        .map(|&id| (id, extract_req(&one, &buf, 5, id, Path::Ffi)))
        .collect();
    // instance two, the same number and buffer, another event; then its
    // next events, on this thread and on another
    buf.copy_from_slice(&eb);
    for (n, &id) in ids.iter().enumerate() {
        assert_eq!(
            extract_one(&two, &buf, 5, id, Path::Ffi),
            b[n],
            "two's event 5"
        );
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            for (n, &id) in ids.iter().enumerate() {
                let v = extract_one(&two, &ea, 6, id, Path::Ffi);
                assert_eq!(v, a[n], "two's event 6 on another thread");
            }
        });
    });
    // instance one, its event 5 again (other fields, then the same ones):
    // what was handed out at first still reads the same
    buf.copy_from_slice(&ea);
    for (n, &id) in ids.iter().enumerate().rev() {
        assert_eq!(
            extract_one(&one, &buf, 5, id, Path::Ffi),
            a[n],
            "one's event 5 again"
        );
    }
    for (n, (id, req)) in kept.iter().enumerate() {
        // SAFETY: instance one had no other event since.
        let v = unsafe { value(*id, req) };
        assert_eq!(v, a[n], "a value of one's event 5, read again at the end");
    }
}

#[test]
fn event_number_0_is_read_at_each_call_and_forgets_the_event_before() {
    let ([ea, eb], ids, [a, b]) = twins();
    let one = Plugin::new();
    let mut buf = ea.clone();
    let read = |buf: &[u8], n: u64| -> Vec<Value> {
        ids.iter()
            .map(|&id| extract_one(&one, buf, n, id, Path::Ffi))
            .collect()
    };
    assert_eq!(read(&buf, 7), a, "event 7");
    buf.copy_from_slice(&eb);
    assert_eq!(read(&buf, 0), b, "event 0 at event 7's address");
    buf.copy_from_slice(&ea);
    assert_eq!(read(&buf, 0), a, "another event 0 at the same address");
    buf.copy_from_slice(&eb);
    assert_eq!(read(&buf, 7), b, "event number 7 again, another event");
}

#[test]
fn threads_taking_turns_on_one_instance_and_instances_side_by_side_read_their_own_events() {
    let ([ea, eb], ids, [a, b]) = twins();
    let events = [(&ea, &a), (&eb, &b)];
    let one = Plugin::new();
    // one instance handed from thread to thread, event after event
    let mut buf = ea.clone();
    for n in 1..=6u64 {
        let (evt, want) = events[n as usize % 2];
        buf.copy_from_slice(evt);
        let buf = &buf;
        let one = &one;
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, &id) in ids.iter().enumerate() {
                    let v = extract_one(one, buf, n, id, Path::Ffi);
                    assert_eq!(v, want[i], "event {n} on its own thread");
                }
            });
        });
        // the same event again on this thread
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(
                extract_one(one, buf, n, id, Path::Ffi),
                want[i],
                "event {n} again"
            );
        }
    }
    // instances of their own side by side, each event in its own buffer,
    // the numbers the same on both
    let (x, y) = (Plugin::new(), Plugin::new());
    std::thread::scope(|s| {
        for (p, first) in [(&x, 0usize), (&y, 1)] {
            let events = &events;
            let ids = &ids;
            s.spawn(move || {
                let mut buf = events[first].0.clone();
                for n in 1..=2000u64 {
                    let (evt, want) = events[(first + n as usize) % 2];
                    buf.copy_from_slice(evt);
                    for (i, &id) in ids.iter().enumerate() {
                        let v = extract_one(p, &buf, n, id, Path::Ffi);
                        assert_eq!(v, want[i], "event {n} of its instance");
                    }
                }
            });
        }
    });
}

#[test]
fn another_instances_next_event_never_frees_this_ones_values() {
    let ([ea, eb], ids, [a, b]) = twins();
    let (one, two) = (Plugin::new(), Plugin::new());
    let read = |p: &Plugin, evt: &[u8], n: u64| {
        for (i, &id) in ids.iter().enumerate() {
            let want = if evt == ea.as_slice() { &a[i] } else { &b[i] };
            assert_eq!(&extract_one(p, evt, n, id, Path::Ffi), want, "event {n}");
        }
    };
    // the same event number on both instances, on one thread
    read(&one, &ea, 9);
    let kept: Vec<_> = ids
        .iter()
        .map(|&id| (id, extract_req(&two, &eb, 9, id, Path::Ffi)))
        .collect();
    // instance one moves on (its memory reused, more than once over)
    for _ in 0..4 {
        read(&one, &ea, 10);
    }
    for (n, (id, req)) in kept.iter().enumerate() {
        // SAFETY: instance two had no other event since.
        let v = unsafe { value(*id, req) };
        assert_eq!(v, b[n], "two's event 9 after one's event 10");
    }
}
