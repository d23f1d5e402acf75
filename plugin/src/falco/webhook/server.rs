//! The webhook's HTTP(S) server: its own thread with a single-threaded
//! tokio runtime, one path, POST only, bounded bodies, optional bearer
//! token (compared in constant time), and a bounded queue toward
//! `next_batch` that never blocks (full: 503, counted, a rate-limited
//! WARN).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{decode_body, Listen, Received, WebhookConfig, WebhookError, WebhookStats};
use crate::alert::text::escape;
use crate::sync::lock;

/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one "queue full" warning per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

/// What every request handler shares.
struct Ctx {
    path: String,
    max_body: u64,
    /// SHA-256 of the bearer token (compared digest to digest, so the
    /// comparison takes the same time whatever the length).
    token: Option<[u8; 32]>,
    tx: SyncSender<Received>,
    capacity: usize,
    stats: Arc<WebhookStats>,
    warned: Mutex<(Option<Instant>, u64)>,
}

/// The running server.
pub(super) struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn read_token(cfg: &WebhookConfig) -> Result<Option<[u8; 32]>, WebhookError> {
    if let Some(t) = &cfg.bearer_token {
        return Ok(Some(sha256(t.as_bytes())));
    }
    let Some(path) = &cfg.bearer_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| WebhookError::File {
        key: "webhook.bearerTokenFile",
        path: path.clone(),
        source,
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(WebhookError::Setup(format!(
            "webhook.bearerTokenFile {path}: empty token"
        )));
    }
    Ok(Some(sha256(t.as_bytes())))
}

fn tls_acceptor(listen: &Listen, cfg: &WebhookConfig) -> Result<Option<TlsAcceptor>, WebhookError> {
    let (cert, key) = match (&cfg.tls_cert_file, &cfg.tls_key_file, listen.tls) {
        (Some(c), Some(k), true) => (c, k),
        (None, _, false) | (_, None, false) => return Ok(None),
        (Some(_), Some(_), false) => {
            return Err(WebhookError::Setup(
                "webhook.tlsCertFile is set but open_params is http://: use https://".into(),
            ))
        }
        _ => {
            return Err(WebhookError::Setup(
                "https:// needs webhook.tlsCertFile and webhook.tlsKeyFile".into(),
            ))
        }
    };
    let tls = |what: &str, path: &str, e: &dyn std::fmt::Display| {
        WebhookError::Tls(format!("webhook.{what} {path}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls("tlsCertFile", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("tlsCertFile", cert, &e))?;
    if certs.is_empty() {
        return Err(tls("tlsCertFile", cert, &"no certificate"));
    }
    let pkey = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("tlsKeyFile", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, pkey)
        .map_err(|e| tls("tlsKeyFile", key, &e))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(sc))))
}

impl Server {
    /// Binds, loads TLS and token, and starts the server thread.
    pub(super) fn start(
        listen: &Listen,
        cfg: &WebhookConfig,
        stats: Arc<WebhookStats>,
    ) -> Result<(Self, Receiver<Received>), WebhookError> {
        let tls = tls_acceptor(listen, cfg)?;
        let token = read_token(cfg)?;
        let listener =
            std::net::TcpListener::bind(listen.addr).map_err(|source| WebhookError::Bind {
                addr: listen.addr,
                source,
            })?;
        let bind_err = |source| WebhookError::Bind {
            addr: listen.addr,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let capacity = cfg.queue_capacity.max(1) as usize;
        let (tx, rx) = sync_channel(capacity);
        let ctx = Arc::new(Ctx {
            path: listen.path.clone(),
            max_body: cfg.max_body_bytes,
            token,
            tx,
            capacity,
            stats,
            warned: Mutex::new((None, 0)),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(WebhookError::Start)?;
        let (stop, stopped) = oneshot::channel();
        let conns = Arc::new(Semaphore::new(cfg.max_connections.max(1) as usize));
        let thread = std::thread::Builder::new()
            .name("kive-webhook".into())
            .spawn(move || rt.block_on(serve(listener, ctx, tls, conns, stopped)))
            .map_err(WebhookError::Start)?;
        log::info!(
            "kive: webhook source listening on {}://{addr}{}",
            if listen.tls { "https" } else { "http" },
            escape(&listen.path)
        );
        Ok((
            Self {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            },
            rx,
        ))
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("kive: webhook server thread panicked");
            }
        }
        log::info!("kive: webhook source closed");
    }
}

async fn serve(
    listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
    tls: Option<TlsAcceptor>,
    conns: Arc<Semaphore>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("kive: webhook: cannot serve the socket: {e}");
            return;
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    log::debug!("kive: webhook: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            WebhookStats::bump(&ctx.stats.connections_refused);
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(TokioIo::new(stream), ctx).await,
                Some(acc) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(TokioIo::new(s), ctx).await,
                        Ok(Err(e)) => {
                            WebhookStats::bump(&ctx.stats.connections_refused);
                            log::debug!("kive: webhook: TLS handshake with {peer}: {e}");
                        }
                        Err(_) => {
                            WebhookStats::bump(&ctx.stats.connections_refused);
                            log::debug!("kive: webhook: TLS handshake with {peer} timed out");
                        }
                    }
                }
            }
        });
    }
}

async fn serve_conn<I>(io: I, ctx: Arc<Ctx>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = b.serve_connection(io, svc).await {
        log::debug!("kive: webhook: connection: {e}");
    }
}

fn reply(status: StatusCode, message: &str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Ctx {
    fn reject(&self, status: StatusCode, message: &str) -> Reply {
        WebhookStats::bump(&self.stats.rejected);
        reply(status, message)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let Some(value) = req.headers().get(AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some((scheme, token)) = value.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        bool::from(sha256(token.trim_ascii()).ct_eq(want))
    }

    /// Counts a refusal for a full queue and warns at most every
    /// [`WARN_EVERY`].
    fn queue_full(&self) {
        WebhookStats::bump(&self.stats.queue_full);
        let mut w = lock(&self.warned);
        let now = Instant::now();
        if w.0.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            log::warn!(
                "kive: webhook: queue full ({} alerts waiting for Falco): alert refused with 503 ({} more refused since the last warning; see the webhook_queue_full metric)",
                self.capacity,
                w.1
            );
            *w = (Some(now), 0);
        } else {
            w.1 += 1;
        }
    }
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Reply {
    if req.uri().path() != ctx.path {
        return ctx.reject(StatusCode::NOT_FOUND, "not found: kive serves one path");
    }
    if req.method() != Method::POST {
        let mut r = ctx.reject(StatusCode::METHOD_NOT_ALLOWED, "only POST is allowed");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !ctx.authorized(&req) {
        WebhookStats::bump(&ctx.stats.unauthorized);
        let mut r = ctx.reject(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let too_large = || {
        ctx.reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body exceeds {} bytes", ctx.max_body),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > ctx.max_body) {
        return too_large();
    }
    let limit = usize::try_from(ctx.max_body).unwrap_or(usize::MAX);
    let body = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Err(_) => return ctx.reject(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return ctx.reject(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let mut payload = Vec::with_capacity(body.len() / 2 + 64);
    let ts = match decode_body(&body, &mut payload) {
        Ok(ts) => ts,
        Err(e) => return ctx.reject(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match ctx.tx.try_send((payload, ts)) {
        Ok(()) => {
            WebhookStats::bump(&ctx.stats.accepted);
            reply(StatusCode::OK, "ok")
        }
        Err(TrySendError::Full(_)) => {
            ctx.queue_full();
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "kive's queue toward Falco is full: retry later",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(TrySendError::Disconnected(_)) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, "the capture is closing")
        }
    }
}
