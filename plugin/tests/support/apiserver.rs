//! A test double of the Kubernetes API server that speaks the real REST and
//! watch protocol over HTTP, so that the real `kube` client and watchers
//! are what the tests exercise: list with `resourceVersion`, chunked watch
//! streams of ADDED/MODIFIED/DELETED, `fieldSelector=spec.nodeName=…`, and
//! `410 Gone` (an ERROR event with an Expired status) for a compacted
//! resourceVersion. It can be stopped (connections dropped) and restarted on
//! the same port.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The two resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Pod.
    Pod,
    /// kivebpf.san7o.github.io/v1 KivePolicy.
    Policy,
    /// core/v1 Namespace.
    Namespace,
    /// security.kubearmor.com/v1 KubeArmorPolicy (served once installed).
    KaPolicy,
    /// security.kubearmor.com/v1 KubeArmorClusterPolicy (served once installed).
    KaClusterPolicy,
    /// security.kubearmor.com/v1 KubeArmorHostPolicy (served once installed).
    KaHostPolicy,
    /// core/v1 Node.
    Node,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Pod => "v1",
            Kind::Policy => "kivebpf.san7o.github.io/v1",
            Kind::Namespace | Kind::Node => "v1",
            Kind::KaPolicy | Kind::KaClusterPolicy | Kind::KaHostPolicy => {
                "security.kubearmor.com/v1"
            }
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Policy => "KivePolicy",
            Kind::Namespace => "Namespace",
            Kind::KaPolicy => "KubeArmorPolicy",
            Kind::KaClusterPolicy => "KubeArmorClusterPolicy",
            Kind::KaHostPolicy => "KubeArmorHostPolicy",
            Kind::Node => "Node",
        }
    }
}

#[derive(Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    ty: &'static str,
    object: Value,
}

struct Inner {
    rv: u64,
    compacted_below: u64,
    objects: BTreeMap<(Kind, String), Value>,
    log: Vec<Change>,
    tx: broadcast::Sender<Change>,
    requests: HashMap<String, usize>,
    /// Custom resources whose CRD is installed (the others answer 404).
    installed: std::collections::HashSet<Kind>,
    /// events.k8s.io/v1 Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
    /// Whether Event writes are refused (403, as without the RBAC rule).
    events_forbidden: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// The running test API server.
pub struct ApiServer {
    inner: Shared,
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn selector_matches(sel: Option<&String>, obj: &Value) -> bool {
    let Some(sel) = sel else { return true };
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (path, want) = term.split_once('=').unwrap_or((term, ""));
        let want = want.trim_start_matches('=');
        let mut v = obj;
        for part in path.split('.') {
            v = &v[part];
        }
        v.as_str().unwrap_or_default() == want
    })
}

impl ApiServer {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        let (tx, _) = broadcast::channel(4096);
        let inner = Arc::new(Mutex::new(Inner {
            rv: 100,
            compacted_below: 0,
            objects: BTreeMap::new(),
            log: Vec::new(),
            tx,
            requests: HashMap::new(),
            installed: [Kind::Pod, Kind::Policy, Kind::Namespace, Kind::Node].into(),
            events: BTreeMap::new(),
            events_forbidden: false,
        }));
        let mut s = Self {
            inner,
            addr: "127.0.0.1:0".parse().expect("addr"),
            rt: None,
        };
        s.serve();
        s
    }

    fn serve(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test api server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap_or_else(|e| panic!("binding the test API server on {}: {e}", self.addr));
        self.addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .route(
                "/apis/kivebpf.san7o.github.io/v1/kivepolicies",
                get(policies),
            )
            .route("/api/v1/namespaces", get(namespaces))
            .route("/api/v1/nodes", get(nodes))
            .route(
                "/apis/security.kubearmor.com/v1/kubearmorhostpolicies",
                get(ka_host_policies),
            )
            .route(
                "/apis/security.kubearmor.com/v1/kubearmorpolicies",
                get(ka_policies),
            )
            .route(
                "/apis/security.kubearmor.com/v1/kubearmorclusterpolicies",
                get(ka_cluster_policies),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(create_event),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(patch_event),
            )
            .with_state(Arc::clone(&self.inner));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.rt = Some(rt);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server.
    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n",
                self.url()
            ),
        )
        .expect("write kubeconfig");
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    pub fn apply(&self, kind: Kind, mut object: Value) {
        let mut g = self.inner.lock().expect("lock");
        g.rv += 1;
        let rv = g.rv;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let k = (kind, key(&object));
        let ty = if g.objects.contains_key(&k) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        g.objects.insert(k, object.clone());
        let change = Change {
            rv,
            kind,
            ty,
            object,
        };
        g.log.push(change.clone());
        let _ = g.tx.send(change);
    }

    /// Deletes an object (DELETED).
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut g = self.inner.lock().expect("lock");
        let Some(mut object) = g.objects.remove(&(kind, format!("{namespace}/{name}"))) else {
            panic!("deleting {namespace}/{name}: not there");
        };
        g.rv += 1;
        let rv = g.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change {
            rv,
            kind,
            ty: "DELETED",
            object,
        };
        g.log.push(change.clone());
        let _ = g.tx.send(change);
    }

    /// Installs the CRD of a custom resource: it is served from now on.
    pub fn install(&self, kind: Kind) {
        self.inner.lock().expect("lock").installed.insert(kind);
    }

    /// Stops serving a resource (404), as for a client that may not see it.
    pub fn uninstall(&self, kind: Kind) {
        self.inner.lock().expect("lock").installed.remove(&kind);
    }

    /// Forgets history: a watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut g = self.inner.lock().expect("lock");
        g.compacted_below = g.rv + 1;
        g.log.clear();
    }

    /// How many list (`list`) and watch (`watch`) requests each path got.
    pub fn requests(&self, what: &str) -> usize {
        self.inner
            .lock()
            .expect("lock")
            .requests
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    /// The events.k8s.io/v1 Events written so far, as stored.
    pub fn events(&self) -> Vec<Value> {
        self.inner
            .lock()
            .expect("lock")
            .events
            .values()
            .cloned()
            .collect()
    }

    /// Refuses (403) or accepts Event writes from now on.
    pub fn forbid_events(&self, forbidden: bool) {
        self.inner.lock().expect("lock").events_forbidden = forbidden;
    }

    /// Stops serving: every connection, watches included, is dropped.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }

    /// Serves again on the same port, with the same objects.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn pods(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Pod, q)
}

async fn policies(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Policy, q)
}

async fn namespaces(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Namespace, q)
}

async fn nodes(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Node, q)
}

async fn ka_host_policies(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    handle(s, Kind::KaHostPolicy, q)
}

async fn ka_policies(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    handle(s, Kind::KaPolicy, q)
}

async fn ka_cluster_policies(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    handle(s, Kind::KaClusterPolicy, q)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": {},
        "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn object(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// What the real server checks of an events.k8s.io/v1 Event.
fn invalid_event(ns: &str, e: &Value) -> Option<String> {
    let meta = &e["metadata"];
    if meta["namespace"].as_str().is_some_and(|n| n != ns) {
        return Some(
            "the namespace of the object does not match the namespace on the request".into(),
        );
    }
    for (field, v) in [
        ("metadata.name", &meta["name"]),
        ("eventTime", &e["eventTime"]),
        ("reportingController", &e["reportingController"]),
        ("reportingInstance", &e["reportingInstance"]),
        ("reason", &e["reason"]),
        ("action", &e["action"]),
        ("type", &e["type"]),
    ] {
        if v.as_str().is_none_or(str::is_empty) {
            return Some(format!("{field}: Required value"));
        }
    }
    if !matches!(e["type"].as_str(), Some("Normal" | "Warning")) {
        return Some("type: Unsupported value".into());
    }
    if e["note"].as_str().is_some_and(|n| n.len() > 1024) {
        return Some("note: Too long: may not be more than 1024 bytes".into());
    }
    if !e["series"].is_null() && e["series"]["count"].as_i64().is_none_or(|c| c < 2) {
        return Some("series.count: Invalid value: should be at least 2".into());
    }
    None
}

async fn create_event(
    State(s): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    body: String,
) -> Response {
    let mut g = s.lock().expect("lock");
    *g.requests.entry("Event create".into()).or_default() += 1;
    if g.events_forbidden {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "events.events.k8s.io is forbidden",
        );
    }
    let Ok(mut e) = serde_json::from_str::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    if let Some(why) = invalid_event(&ns, &e) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why);
    }
    let name = e["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if g.events.contains_key(&(ns.clone(), name.clone())) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events {name:?} already exists"),
        );
    }
    g.rv += 1;
    e["metadata"]["namespace"] = json!(ns);
    e["metadata"]["resourceVersion"] = json!(g.rv.to_string());
    e["metadata"]["uid"] = json!(format!("event-{}", g.rv));
    g.events.insert((ns, name), e.clone());
    object(StatusCode::CREATED, &e)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

async fn patch_event(
    State(s): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut g = s.lock().expect("lock");
    *g.requests.entry("Event patch".into()).or_default() += 1;
    if g.events_forbidden {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "events.events.k8s.io is forbidden",
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            ct,
        );
    }
    let Ok(p) = serde_json::from_str::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    g.rv += 1;
    let rv = g.rv;
    let Some(e) = g.events.get_mut(&(ns.clone(), name.clone())) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("events {name:?} not found"),
        );
    };
    let mut patched = e.clone();
    merge(&mut patched, &p);
    if let Some(why) = invalid_event(&ns, &patched) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why);
    }
    patched["metadata"]["resourceVersion"] = json!(rv.to_string());
    *e = patched.clone();
    object(StatusCode::OK, &patched)
}

fn handle(s: Shared, kind: Kind, q: HashMap<String, String>) -> Response {
    if !s.lock().expect("lock").installed.contains(&kind) {
        *s.lock()
            .expect("lock")
            .requests
            .entry(format!("{kind:?} absent"))
            .or_default() += 1;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "the server could not find the requested resource",
            "reason": "NotFound", "details": {}, "code": 404});
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            status.to_string(),
        )
            .into_response();
    }
    let selector = q.get("fieldSelector").cloned();
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        watch(s, kind, q, selector)
    } else {
        list(s, kind, selector)
    }
}

fn list(s: Shared, kind: Kind, selector: Option<String>) -> Response {
    let mut g = s.lock().expect("lock");
    *g.requests.entry(format!("{kind:?} list")).or_default() += 1;
    let items: Vec<Value> = g
        .objects
        .iter()
        .filter(|((k, _), o)| *k == kind && selector_matches(selector.as_ref(), o))
        .map(|(_, o)| {
            // like the real server: list items carry no apiVersion/kind
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind()),
        "metadata": {"resourceVersion": g.rv.to_string()},
        "items": items,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn watch(s: Shared, kind: Kind, q: HashMap<String, String>, selector: Option<String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let (backlog, mut rx, gone) = {
        let mut g = s.lock().expect("lock");
        *g.requests.entry(format!("{kind:?} watch")).or_default() += 1;
        let gone = from != 0 && from < g.compacted_below;
        let backlog: Vec<Change> = g
            .log
            .iter()
            .filter(|c| c.rv > from && c.kind == kind)
            .cloned()
            .collect();
        (backlog, g.tx.subscribe(), gone)
    };
    let stream = async_stream::stream! {
        if gone {
            let status = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            yield Ok::<_, std::convert::Infallible>(format!("{status}\n"));
            return;
        }
        let mut last = from;
        for c in backlog {
            last = c.rv;
            if selector_matches(selector.as_ref(), &c.object) {
                yield Ok(format!("{}\n", json!({"type": c.ty, "object": c.object})));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            let c = tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let Ok(c) = c else { break };
            if c.kind != kind || c.rv <= last {
                continue;
            }
            last = c.rv;
            if selector_matches(selector.as_ref(), &c.object) {
                yield Ok(format!("{}\n", json!({"type": c.ty, "object": c.object})));
            }
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A running pod of `node` whose one container has `container_id`.
pub fn pod(name: &str, node: &str, container_id: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"app": "web", "pod-template-hash": "5f7c9d"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "name": "web-5f7c9d", "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "web-sa",
                 "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                   "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "",
                     "containerID": format!("containerd://{container_id}"), "ready": true,
                     "restartCount": 0, "state": {"running": {"startedAt": "2026-11-22T00:00:00Z"}}}]}
    })
}

/// A KivePolicy with one decoy at `path` in pods labelled app=web of
/// namespace default.
pub fn policy(name: &str, path: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "kivebpf-system"},
        "spec": {"alertVersion": "v1", "traps": [{
            "path": path, "create": true, "mode": 0o400,
            "metadata": {"severity": "high"},
            "matchAny": [{"namespace": "default", "matchLabels": {"app": "web"}}]
        }]}
    })
}

/// The cluster source of node `node` watching `api` (resync every 200 ms)
/// and applying to `rt`; the temp dir holds its kubeconfig.
pub fn cluster_source(
    api: &ApiServer,
    rt: &kive::runtime::Runtime,
    node: &str,
    scope: kive::policy::scope::ScopeConfig,
) -> (kive::k8s::ClusterSource, tempfile::TempDir) {
    cluster_source_every(api, rt, node, scope, Duration::from_millis(200))
}

/// [`cluster_source`] with its own resync period.
pub fn cluster_source_every(
    api: &ApiServer,
    rt: &kive::runtime::Runtime,
    node: &str,
    scope: kive::policy::scope::ScopeConfig,
    resync: Duration,
) -> (kive::k8s::ClusterSource, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let cluster = kive::k8s::ClusterSource::start(
        kive::k8s::ClusterConfig {
            kubeconfig: Some(kubeconfig),
            node_name: node.into(),
            resync,
            scope,
        },
        rt.pod_controller(),
    )
    .expect("cluster source");
    (cluster, dir)
}
