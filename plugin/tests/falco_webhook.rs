//! The webhook source through the built `libkive.so` (its C symbols, as
//! Falco drives them): a POSTed KiveAlert comes out of `next_batch` with
//! its fields; every refusal has its status (404, 405, 401, 413, 400,
//! 503), asked by real HTTP clients (reqwest and the `curl` binary), over
//! plain HTTP and over TLS with a certificate generated here.

mod falco_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use falco_common::{json_str, OwnedEvent, Plugin, Value};
use falco_plugin::api::{ss_plugin_rc_SS_PLUGIN_SUCCESS, ss_plugin_rc_SS_PLUGIN_TIMEOUT};

const DEADLINE: Duration = Duration::from_secs(30);

fn sample() -> String {
    std::fs::read_to_string(falco_common::test_file("seed_sample_alert.json"))
        .expect("the seed sample alert")
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits for `n` events from the capture (timeouts in between are normal).
fn events(inst: &falco_common::Instance<'_>, n: usize) -> Vec<OwnedEvent> {
    let start = Instant::now();
    let mut all = Vec::new();
    while all.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} events after {DEADLINE:?}",
            all.len()
        );
        let (rc, evts) = inst.next_batch();
        if rc == ss_plugin_rc_SS_PLUGIN_SUCCESS {
            assert!(!evts.is_empty(), "success with an empty batch");
            all.extend(evts);
        } else if rc == ss_plugin_rc_SS_PLUGIN_TIMEOUT {
            assert!(evts.is_empty());
        } else {
            panic!("next_batch rc {rc}: {}", inst.plugin.last_error());
        }
    }
    all
}

/// `curl` POSTing (or `method`-ing) `body` to `url`: (status, body).
fn curl(url: &str, method: &str, body: &[u8], extra: &[&str]) -> (u16, String) {
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-X",
            method,
            "--data-binary",
            "@-",
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // the server may answer (413) before reading everything
    let _ = stdin.write_all(body);
    drop(stdin);
    let out = child.wait_with_output().expect("curl finishes");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl printed no status: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, body.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn reqwest_client(ca_pem: Option<&str>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.expect("PEM certificate")).expect("a root");
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// POSTs with reqwest: Ok((status, body)) or the client's error text.
fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    runtime().block_on(async {
        let mut req = client.post(url).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.map_err(|e| e.to_string())?))
    })
}

fn assert_sample_fields(p: &Plugin, e: &OwnedEvent) {
    for (field, want) in [
        ("kive.alert.version", Value::s("v1")),
        ("kive.policy.name", Value::s("kive-sample-policy")),
        ("kive.path", Value::s("/secret.txt")),
        ("kive.inode", Value::U64(16256084)),
        ("kive.pod.name", Value::s("nginx-pod")),
        ("kive.pod.namespace", Value::s("default")),
        ("kive.node.name", Value::s("kive-worker")),
        ("kive.process.pid", Value::U64(176928)),
        ("kive.process.binary", Value::s("cat")),
        ("kive.access", Value::s("read")),
        // the alert has no cgroup id: no value, not a made-up one
        ("kive.cgroup.id", Value::None),
    ] {
        assert_eq!(p.extract(e.as_ptr(), field), Ok(want), "{field}");
    }
    assert_eq!(e.ts(), 1_754_153_479_000_000_000, "the alert's timestamp");
}

#[test]
fn an_alert_posted_with_reqwest_comes_out_of_next_batch_with_its_fields() {
    let p = Plugin::init("{}").expect("init");
    let url = format!("http://127.0.0.1:{}/kive", free_port());
    let inst = p.open(Some(&url)).expect("open the webhook");
    let (status, body) = post(&reqwest_client(None), &url, sample(), None).expect("POST");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let evts = events(&inst, 1);
    assert_eq!(evts.len(), 1);
    assert_sample_fields(&p, &evts[0]);
    assert_eq!(p.metric("webhook_accepted"), 1);
    // and kive's additive keys are welcome
    let mut v: serde_json::Value = serde_json::from_str(&sample()).expect("json");
    v["kive-policy-namespace"] = serde_json::json!("tenant-a");
    v["kive-policy-severity"] = serde_json::json!(7);
    let (status, _) = post(&reqwest_client(None), &url, v.to_string(), None).expect("POST");
    assert_eq!(status, 200);
    let e = events(&inst, 1);
    assert_eq!(
        p.extract(e[0].as_ptr(), "kive.policy.namespace"),
        Ok(Value::s("tenant-a"))
    );
}

#[test]
fn curl_gets_every_status_the_webhook_answers() {
    let cfg = r#"{"webhook":{"maxBodyBytes":4096,"bearerToken":"s3cret","queueCapacity":1}}"#;
    let p = Plugin::init(cfg).expect("init");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/kive");
    let inst = p.open(Some(&url)).expect("open the webhook");
    let auth = ["-H", "Authorization: Bearer s3cret"];
    let alert = sample();

    let (code, body) = curl(&url, "POST", alert.as_bytes(), &[]);
    assert_eq!(code, 401, "no token: {body}");
    let (code, _) = curl(
        &url,
        "POST",
        alert.as_bytes(),
        &["-H", "Authorization: Bearer s3cres"],
    );
    assert_eq!(code, 401, "a wrong token of the same length");
    let (code, _) = curl(
        &url,
        "POST",
        alert.as_bytes(),
        &["-H", "Authorization: Basic s3cret"],
    );
    assert_eq!(code, 401, "another scheme");
    assert_eq!(p.metric("webhook_unauthorized"), 3);

    let other = format!("http://127.0.0.1:{port}/other");
    assert_eq!(curl(&other, "POST", alert.as_bytes(), &auth).0, 404);
    assert_eq!(curl(&url, "PUT", alert.as_bytes(), &auth).0, 405);
    let (code, _) = curl(&url, "GET", b"", &["-G"]);
    assert_eq!(code, 405);

    let (code, body) = curl(&url, "POST", b"{\"hello\":1}", &auth);
    assert_eq!(code, 400);
    assert!(
        body.contains("not a KiveAlert v1 JSON object") && body.contains("kive-alert-version"),
        "{body}"
    );
    let mut v: serde_json::Value = serde_json::from_str(&alert).expect("json");
    v["process"]["pid"] = serde_json::json!("not a number");
    let (code, body) = curl(&url, "POST", v.to_string().as_bytes(), &auth);
    assert_eq!(code, 400);
    assert!(body.contains("process.pid"), "names the field: {body}");
    let (code, _) = curl(&url, "POST", b"\xff\xfe not json", &auth);
    assert_eq!(code, 400);

    // over the limit, announced by Content-Length or streamed chunked
    let mut big = v.clone();
    big["custom-metadata"] = serde_json::json!({ "pad": "x".repeat(5000) });
    let big = big.to_string();
    let (code, body) = curl(&url, "POST", big.as_bytes(), &auth);
    assert_eq!(code, 413, "{body}");
    let (code, _) = curl(
        &url,
        "POST",
        big.as_bytes(),
        &[
            "-H",
            "Authorization: Bearer s3cret",
            "-H",
            "Transfer-Encoding: chunked",
        ],
    );
    assert_eq!(code, 413, "chunked");

    // the queue holds one alert: the second waits for Falco → 503
    assert_eq!(curl(&url, "POST", alert.as_bytes(), &auth).0, 200);
    let (code, body) = curl(&url, "POST", alert.as_bytes(), &auth);
    assert_eq!(code, 503, "{body}");
    assert_eq!(p.metric("webhook_queue_full"), 1);
    assert_eq!(p.metric("webhook_accepted"), 1);
    assert_eq!(p.metric("webhook_rejected"), 11);
    let evts = events(&inst, 1);
    assert_sample_fields(&p, &evts[0]);
    // nothing refused became an event
    let (rc, more) = inst.next_batch();
    assert_eq!((rc, more.len()), (ss_plugin_rc_SS_PLUGIN_TIMEOUT, 0));
    // room again
    assert_eq!(curl(&url, "POST", alert.as_bytes(), &auth).0, 200);
    assert_eq!(events(&inst, 1).len(), 1);
}

/// A self-signed certificate for 127.0.0.1 written as PEM files.
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("self-signed certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, signing_key.serialize_pem()).expect("write key");
    (
        cert_path.to_str().expect("utf8").to_string(),
        key_path.to_str().expect("utf8").to_string(),
        cert.pem(),
    )
}

#[test]
fn https_with_a_given_certificate_and_a_bearer_token_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, ca_pem) = tls_files(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-123\n").expect("token file");
    let cfg = format!(
        r#"{{"webhook":{{"tlsCertFile":{},"tlsKeyFile":{},"bearerTokenFile":{}}}}}"#,
        json_str(&cert),
        json_str(&key),
        json_str(token_file.to_str().expect("utf8"))
    );
    let p = Plugin::init(&cfg).expect("init");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/kive");
    let inst = p.open(Some(&url)).expect("open the https webhook");

    let trusted = reqwest_client(Some(&ca_pem));
    let (status, _) = post(&trusted, &url, sample(), Some("tok-123")).expect("POST over TLS");
    assert_eq!(status, 200);
    assert_sample_fields(&p, &events(&inst, 1)[0]);
    let (status, _) = post(&trusted, &url, sample(), Some("tok-12")).expect("POST");
    assert_eq!(status, 401, "a prefix of the token");

    let (code, _) = curl(
        &url,
        "POST",
        sample().as_bytes(),
        &["--cacert", &cert, "-H", "Authorization: Bearer tok-123"],
    );
    assert_eq!(code, 200, "curl over TLS");
    assert_eq!(events(&inst, 1).len(), 1);

    // a client that does not trust the certificate does not get through
    let e = post(&reqwest_client(None), &url, sample(), Some("tok-123"))
        .expect_err("untrusted certificate");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // nor does plain HTTP on the TLS port
    let plain = format!("http://127.0.0.1:{port}/kive");
    assert!(
        post(&reqwest_client(None), &plain, sample(), Some("tok-123")).is_err(),
        "plain HTTP to the TLS port"
    );
    // the server counts a failed handshake after the client has given up:
    // wait for it
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.metric("webhook_connections_refused") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        p.metric("webhook_connections_refused") >= 2,
        "both failed handshakes counted: {}",
        p.metric("webhook_connections_refused")
    );
    assert_eq!(p.metric("webhook_accepted"), 2);
}

#[test]
fn open_fails_clearly_on_a_bad_address_or_tls_setup_and_close_frees_the_port() {
    let p = Plugin::init("{}").expect("init");
    let e = p
        .open(Some("https://127.0.0.1:1/kive"))
        .err()
        .expect("https without a certificate");
    assert!(e.contains("webhook.tlsCertFile"), "{e}");
    let e = p
        .open(Some("http://127.0.0.1/kive"))
        .err()
        .expect("no port");
    assert!(e.contains("a port is required"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let e = p
        .open(Some(&format!("http://127.0.0.1:{port}/kive")))
        .err()
        .expect("port in use");
    assert!(e.contains("binding 127.0.0.1"), "{e}");
    drop(taken);

    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.pem");
    let cfg = format!(
        r#"{{"webhook":{{"tlsCertFile":{0},"tlsKeyFile":{0}}}}}"#,
        json_str(missing.to_str().expect("utf8"))
    );
    let p2 = Plugin::init(&cfg).expect("init");
    let e = p2
        .open(Some(&format!("https://127.0.0.1:{}/kive", free_port())))
        .err()
        .expect("missing certificate file");
    assert!(e.contains("tlsCertFile") && e.contains("nope.pem"), "{e}");

    let e = Plugin::init(r#"{"webhook":{"tlsCertFile":"c.pem"}}"#)
        .err()
        .expect("a certificate without a key");
    assert!(e.contains("webhook.tlsKeyFile"), "{e}");
    let e = Plugin::init(r#"{"webhook":{"maxBodyBytes":0}}"#)
        .err()
        .expect("a zero limit");
    assert!(e.contains("webhook.maxBodyBytes"), "{e}");

    // close releases the address: the same port opens again at once
    let url = format!("http://127.0.0.1:{}/kive", free_port());
    let inst = p.open(Some(&url)).expect("open");
    drop(inst);
    let inst = p.open(Some(&url)).expect("reopen after close");
    assert_eq!(curl(&url, "POST", sample().as_bytes(), &[]).0, 200);
    assert_eq!(events(&inst, 1).len(), 1);
}

#[test]
fn connections_over_max_connections_are_closed_and_counted() {
    let p = Plugin::init(r#"{"webhook":{"maxConnections":1}}"#).expect("init");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/kive");
    let inst = p.open(Some(&url)).expect("open");
    // one client holds the only slot without sending a request
    let holder = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let start = Instant::now();
    while p.metric("webhook_connections_refused") == 0 {
        assert!(start.elapsed() < DEADLINE, "a second connection was served");
        let (code, body) = curl_status(&url);
        assert_ne!(code, 200, "served past maxConnections: {body}");
    }
    // the slot frees when the holder leaves
    drop(holder);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "the slot never freed");
        if curl_status(&url).0 == 200 {
            break;
        }
    }
    assert_eq!(events(&inst, 1).len(), 1);
}

/// `curl` POSTing the sample: (status, stderr); status 0 when the
/// connection failed.
fn curl_status(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
        ])
        .arg(format!(
            "@{}",
            falco_common::test_file("seed_sample_alert.json").display()
        ))
        .arg(url)
        .output()
        .expect("curl runs");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}
