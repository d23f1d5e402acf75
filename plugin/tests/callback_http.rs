//! Callbacks against real local HTTP receivers (axum on loopback): exact
//! body, retries, hangs, 4xx/5xx, overflow; and an HTTPS receiver whose
//! certificate is signed by a test CA, trusted only through the CA bundle.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use kive::callback::{CallbackConfig, Callbacks, DestinationConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::wait_until;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A receiver: records bodies; answers with the scripted statuses in turn
/// (then 200); `hang` never answers.
struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    bodies: Arc<Mutex<Vec<String>>>,
    hits: Arc<AtomicUsize>,
    /// TLS handshakes that failed (the client refused the certificate).
    handshake_failures: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A TLS listener for `axum::serve`: TCP accept, then the TLS handshake;
/// a failed handshake is counted and the next connection awaited.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    failures: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1 it signed.
struct TestPki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kive test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

#[derive(Clone)]
struct Script {
    bodies: Arc<Mutex<Vec<String>>>,
    hits: Arc<AtomicUsize>,
    statuses: Arc<Vec<u16>>,
    hang: bool,
}

async fn ingest(State(s): State<Script>, body: String) -> StatusCode {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    if s.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let status = s.statuses.get(n).copied().unwrap_or(200);
    if (200..300).contains(&status) {
        s.bodies.lock().expect("lock").push(body);
    }
    StatusCode::from_u16(status).expect("status")
}

impl Receiver {
    fn start_on(addr: SocketAddr, statuses: Vec<u16>, hang: bool) -> Self {
        Self::serve(addr, statuses, hang, None)
    }

    /// An HTTPS receiver presenting `tls`'s certificate.
    fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        let addr = "127.0.0.1:0".parse().expect("addr");
        Self::serve(addr, vec![], false, Some(tls))
    }

    fn serve(
        addr: SocketAddr,
        statuses: Vec<u16>,
        hang: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let listener = rt.block_on(TcpListener::bind(addr)).expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let script = Script {
            bodies: Arc::default(),
            hits: Arc::default(),
            statuses: Arc::new(statuses),
            hang,
        };
        let (bodies, hits) = (Arc::clone(&script.bodies), Arc::clone(&script.hits));
        let app = Router::new()
            .route("/ingest", post(ingest))
            .with_state(script);
        let handshake_failures = Arc::new(AtomicUsize::new(0));
        let scheme = match tls {
            None => {
                rt.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                "http"
            }
            Some(tls) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: TlsAcceptor::from(tls),
                    failures: Arc::clone(&handshake_failures),
                };
                rt.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                "https"
            }
        };
        Self {
            addr,
            scheme,
            bodies,
            hits,
            handshake_failures,
            rt: Some(rt),
        }
    }

    fn start(statuses: Vec<u16>, hang: bool) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), statuses, hang)
    }

    fn url(&self) -> String {
        format!("{}://{}/ingest", self.scheme, self.addr)
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn quick() -> CallbackConfig {
    CallbackConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(200),
        max_attempts: 30,
        // the receivers run on loopback, which callbacks refuse by default
        destinations: DestinationConfig {
            allow_loopback: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

const ALERT: &str =
    r#"{"kive-alert-version":"v1","kive-policy-name":"p","metadata":{"path":"/secret.txt"}}"#;

#[test]
fn the_receiver_gets_the_exact_json_body() {
    let r = Receiver::start(vec![], false);
    let cb = Callbacks::start(quick()).expect("callbacks");
    assert!(cb.send(&r.url(), ALERT));
    wait_until("delivered", || cb.counts(&r.url()).delivered == 1);
    assert_eq!(r.bodies(), [ALERT]);
    assert_eq!(cb.counts(&r.url()).retries, 0);
}

#[test]
fn a_receiver_that_is_down_then_up_gets_the_alert_after_retries() {
    // find a free port, leave it closed for a while
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let cb = Callbacks::start(quick()).expect("callbacks");
    let url = format!("http://{addr}/ingest");
    assert!(cb.send(&url, ALERT));
    wait_until("a retry after connection refused", || {
        cb.counts(&url).retries >= 2
    });
    assert_eq!(cb.counts(&url).delivered, 0);
    let r = Receiver::start_on(addr, vec![], false);
    wait_until("delivered once it is up", || cb.counts(&url).delivered == 1);
    assert_eq!(r.bodies(), [ALERT]);
}

#[test]
fn server_errors_are_retried_client_errors_are_not() {
    let flaky = Receiver::start(vec![500, 503], false);
    let cb = Callbacks::start(quick()).expect("callbacks");
    cb.send(&flaky.url(), ALERT);
    wait_until("delivered after two 5xx", || {
        cb.counts(&flaky.url()).delivered == 1
    });
    assert_eq!(cb.counts(&flaky.url()).retries, 2);
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 3);

    let strict = Receiver::start(vec![400, 400, 400], false);
    cb.send(&strict.url(), ALERT);
    wait_until("given up on a 4xx", || cb.counts(&strict.url()).failed == 1);
    // given up: no attempt can follow, the count is final
    assert_eq!(
        strict.hits.load(Ordering::SeqCst),
        1,
        "a 4xx is never retried"
    );
    assert_eq!(cb.counts(&strict.url()).retries, 0);
}

#[test]
fn a_hanging_receiver_never_delays_others_and_overflow_is_counted() {
    let hung = Receiver::start(vec![], true);
    let ok = Receiver::start(vec![], false);
    let cfg = CallbackConfig {
        queue_capacity: 4,
        request_timeout: Duration::from_secs(3600),
        ..quick()
    };
    let cb = Arc::new(Callbacks::start(cfg).expect("callbacks"));
    // the hung request would take an hour: a send that waited for it
    // would never let this thread finish
    let sender = {
        let (cb, url) = (Arc::clone(&cb), hung.url());
        std::thread::spawn(move || (0..20).filter(|_| cb.send(&url, ALERT)).count())
    };
    wait_until("20 sends return while the receiver hangs", || {
        sender.is_finished()
    });
    let accepted = sender.join().expect("sender thread") as u64;
    // one in flight (hanging) plus a full queue; the rest dropped and counted
    let dropped = cb.counts(&hung.url()).dropped;
    assert_eq!(accepted + dropped, 20);
    assert!(dropped >= 15, "dropped {dropped}");
    // another endpoint has its own queue: a burst within its capacity all goes through
    for _ in 0..4 {
        assert!(cb.send(&ok.url(), ALERT));
    }
    wait_until("the healthy endpoint got all four", || {
        cb.counts(&ok.url()).delivered == 4
    });
    assert_eq!(cb.counts(&hung.url()).delivered, 0);
    assert_eq!(cb.totals().dropped, dropped);
}

#[test]
fn an_https_receiver_signed_by_the_bundled_ca_gets_the_alert() {
    let pki = test_pki();
    let r = Receiver::start_tls(Arc::clone(&pki.server));
    let mut bundle = tempfile::NamedTempFile::new().expect("temp");
    std::io::Write::write_all(&mut bundle, pki.ca_pem.as_bytes()).expect("write bundle");
    let cb = Callbacks::start(CallbackConfig {
        ca_bundle: Some(bundle.path().to_path_buf()),
        ..quick()
    })
    .expect("callbacks with the CA bundle");
    assert!(r.url().starts_with("https://127.0.0.1:"), "{}", r.url());
    assert!(cb.send(&r.url(), ALERT));
    wait_until("delivered over TLS", || cb.counts(&r.url()).delivered == 1);
    assert_eq!(r.bodies(), [ALERT]);
    assert_eq!(cb.counts(&r.url()).retries, 0);
    assert_eq!(r.handshake_failures.load(Ordering::SeqCst), 0);
}

#[test]
fn without_the_ca_bundle_an_unknown_issuer_is_refused() {
    let pki = test_pki();
    let r = Receiver::start_tls(pki.server);
    let cb = Callbacks::start(CallbackConfig {
        max_attempts: 2,
        ..quick()
    })
    .expect("callbacks with the system roots only");
    assert!(cb.send(&r.url(), ALERT));
    wait_until("given up", || cb.counts(&r.url()).failed == 1);
    assert_eq!(cb.counts(&r.url()).delivered, 0);
    assert!(r.bodies().is_empty(), "nothing reached the handler");
    assert_eq!(r.hits.load(Ordering::SeqCst), 0);
    assert!(
        r.handshake_failures.load(Ordering::SeqCst) >= 1,
        "the client broke off the handshake"
    );
}

#[test]
fn a_loopback_callback_is_refused_by_default() {
    let r = Receiver::start(vec![], false);
    let cb = Callbacks::start(CallbackConfig {
        destinations: DestinationConfig::default(),
        ..quick()
    })
    .expect("callbacks");
    assert!(
        !cb.send(&r.url(), ALERT),
        "a refused destination takes nothing"
    );
    assert!(!cb.send(&r.url(), ALERT));
    assert_eq!(cb.counts(&r.url()).refused, 2);
    assert_eq!(cb.totals().refused, 2);
    // a metadata address is refused the same way
    let md = "http://169.254.169.254/latest/meta-data/";
    assert!(!cb.send(md, ALERT));
    assert_eq!(cb.counts(md).refused, 1);
    assert_eq!(r.hits.load(Ordering::SeqCst), 0, "nothing reached loopback");
}

/// DNS rebinding: the name is harmless, the address it resolves to is
/// not; the check is on the resolved address, at connect time.
#[test]
fn a_host_name_resolving_to_loopback_is_refused_at_connect_time() {
    let r = Receiver::start(vec![], false);
    let url = format!("http://localhost:{}/ingest", r.addr.port());
    let deny = Callbacks::start(CallbackConfig {
        destinations: DestinationConfig::default(),
        ..quick()
    })
    .expect("callbacks");
    assert!(
        deny.send(&url, ALERT),
        "a host name is queued, then checked"
    );
    wait_until("refused once resolved", || deny.counts(&url).refused == 1);
    assert_eq!(deny.counts(&url).retries, 0, "a refusal is not retried");
    assert_eq!(deny.counts(&url).delivered, 0);
    assert_eq!(r.hits.load(Ordering::SeqCst), 0, "nothing reached loopback");
    // the same name with loopback allowed: the resolver path does deliver
    let allow = Callbacks::start(quick()).expect("callbacks");
    assert!(allow.send(&url, ALERT));
    wait_until("delivered through the resolver", || {
        allow.counts(&url).delivered == 1
    });
    assert_eq!(r.bodies(), [ALERT]);
}

#[test]
fn redirects_are_never_followed() {
    let target = Receiver::start(vec![], false);
    let location = target.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind redirector");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route(
        "/ingest",
        post(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        }),
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://{addr}/ingest");
    let cb = Callbacks::start(quick()).expect("callbacks");
    assert!(cb.send(&url, ALERT));
    wait_until("the redirect is a failure", || cb.counts(&url).failed == 1);
    assert_eq!(cb.counts(&url).retries, 0);
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the redirect's target was never reached"
    );
    rt.shutdown_background();
}

#[test]
fn the_allowlist_lets_what_it_names_through_and_nothing_else() {
    let r = Receiver::start(vec![], false);
    let cb = Callbacks::start(CallbackConfig {
        destinations: DestinationConfig {
            allowed: vec!["127.0.0.1/32".into()],
            ..Default::default()
        },
        ..quick()
    })
    .expect("callbacks");
    assert!(cb.send(&r.url(), ALERT), "named by the allowlist");
    wait_until("delivered", || cb.counts(&r.url()).delivered == 1);
    assert_eq!(r.bodies(), [ALERT]);
    let other = "http://10.255.255.1/ingest";
    assert!(!cb.send(other, ALERT), "not in the allowlist");
    assert_eq!(cb.counts(other).refused, 1);
    assert!(
        Callbacks::start(CallbackConfig {
            destinations: DestinationConfig {
                allowed: vec!["not a host/".into()],
                ..Default::default()
            },
            ..quick()
        })
        .is_err(),
        "a bad allowlist entry is an error at start"
    );
}
