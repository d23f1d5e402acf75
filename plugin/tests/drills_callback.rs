//! Fault drills for callback endpoints, against a raw TCP receiver that
//! misbehaves on purpose per connection: it resets the connection, or
//! answers only after the client's request timeout, or hangs; then it
//! answers. Each drill asserts what was delivered, that every failed
//! attempt is counted, and that the sender keeps working (other endpoints,
//! later alerts).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kive::callback::{CallbackConfig, Callbacks};
use support::wait_until;

/// What the receiver does with one connection.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Reads a little of the request, then closes with unread data: RST.
    Reset,
    /// Reads the request, answers 200 after this long.
    Slow(Duration),
    /// Reads the request, never answers (until the test ends).
    Hang,
    /// Reads the request, answers 200 at once.
    Ok,
}

/// A receiver whose n-th connection gets `script[n]` (then `Ok`).
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

/// The body of one HTTP/1.1 request (headers, then content-length bytes).
fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned())
}

impl Receiver {
    fn start(script: Vec<Act>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/ingest", l.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().enumerate() {
                let Ok(mut s) = conn else { continue };
                let act = script.get(n).copied().unwrap_or(Act::Ok);
                let b3 = Arc::clone(&b2);
                std::thread::spawn(move || match act {
                    Act::Reset => {
                        let mut first = [0u8; 8];
                        let _ = s.read(&mut first);
                        // unread request bytes left: close sends a reset
                    }
                    Act::Hang => {
                        let _ = read_request(&mut s);
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                    Act::Slow(_) | Act::Ok => {
                        let Some(body) = read_request(&mut s) else {
                            return;
                        };
                        if let Act::Slow(d) = act {
                            std::thread::sleep(d);
                        }
                        let reply =
                            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        if s.write_all(reply.as_bytes()).is_ok() {
                            b3.lock().expect("lock").push(body);
                        }
                    }
                });
            }
        });
        Self { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

const ALERT: &str =
    r#"{"kive-alert-version":"v1","kive-policy-name":"drill","metadata":{"path":"/secret.txt"}}"#;

fn config() -> CallbackConfig {
    CallbackConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        max_attempts: 10,
        // the receivers run on loopback, which callbacks refuse by default
        destinations: kive::callback::DestinationConfig {
            allow_loopback: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn an_endpoint_that_resets_gets_the_alert_after_counted_retries() {
    let r = Receiver::start(vec![Act::Reset, Act::Reset, Act::Reset]);
    let cb = Callbacks::start(config()).expect("callbacks");
    assert!(cb.send(&r.url, ALERT));
    wait_until("delivered after three resets", || {
        cb.counts(&r.url).delivered == 1
    });
    let c = cb.counts(&r.url);
    assert_eq!(c.retries, 3, "each reset is a counted retry: {c:?}");
    assert_eq!((c.failed, c.dropped), (0, 0), "{c:?}");
    assert_eq!(r.bodies(), [ALERT], "the exact body, once");
    // the sender keeps working
    assert!(cb.send(&r.url, ALERT));
    wait_until("the next alert", || cb.counts(&r.url).delivered == 2);
}

#[test]
fn an_endpoint_slower_than_the_timeout_is_retried_and_counted() {
    // the first two answers come after the 300 ms request timeout
    let slow = Duration::from_millis(1500);
    let r = Receiver::start(vec![Act::Slow(slow), Act::Slow(slow)]);
    let cb = Callbacks::start(config()).expect("callbacks");
    assert!(cb.send(&r.url, ALERT));
    wait_until("delivered once the endpoint is quick", || {
        cb.counts(&r.url).delivered == 1
    });
    let c = cb.counts(&r.url);
    assert_eq!(c.retries, 2, "each timeout is a counted retry: {c:?}");
    assert_eq!((c.failed, c.dropped), (0, 0), "{c:?}");
    // at least once: the slow answers may have stored the body too
    let bodies = r.bodies();
    assert!(
        !bodies.is_empty() && bodies.iter().all(|b| b == ALERT),
        "{bodies:?}"
    );
}

#[test]
fn an_endpoint_that_hangs_is_given_up_on_counted_while_others_deliver() {
    let hung = Receiver::start(vec![Act::Hang; 64]);
    let ok = Receiver::start(vec![]);
    let cb = Callbacks::start(CallbackConfig {
        max_attempts: 3,
        ..config()
    })
    .expect("callbacks");
    assert!(cb.send(&hung.url, ALERT));
    assert!(cb.send(&ok.url, ALERT));
    wait_until("the healthy endpoint delivered", || {
        cb.counts(&ok.url).delivered == 1
    });
    wait_until("the hung endpoint given up", || {
        cb.counts(&hung.url).failed == 1
    });
    let c = cb.counts(&hung.url);
    assert_eq!(
        (c.delivered, c.retries, c.failed),
        (0, 2, 1),
        "three attempts, two retries, one loss counted: {c:?}"
    );
    assert_eq!(cb.totals().failed, 1);
    // the loss does not stop the endpoint's queue
    assert!(cb.send(&ok.url, ALERT));
    wait_until("the next alert", || cb.counts(&ok.url).delivered == 2);
    assert_eq!(ok.bodies(), [ALERT, ALERT]);
}
