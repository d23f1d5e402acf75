//! A test double of the Kubernetes API server that speaks the real REST and
//! watch protocol over HTTP, so that the real `kube` client and watchers
//! are what the tests exercise: list with `resourceVersion`, chunked watch
//! streams of ADDED/MODIFIED/DELETED, `fieldSelector=spec.nodeName=…`, and
//! `410 Gone` (an ERROR event with an Expired status) for a compacted
//! resourceVersion (`watch`); events.k8s.io/v1 Event writes (`events`). It
//! can be stopped (connections dropped) and restarted on the same port.

// The parts are named by `#[path]` because `benches/reconcile.rs` includes
// this file by `#[path]` too: a plain `mod watch;` would be looked for next
// to this file there, beside it here.
#[path = "apiserver/events.rs"]
mod events;
#[path = "apiserver/fixtures.rs"]
mod fixtures;
#[path = "apiserver/watch.rs"]
mod watch;

// not every test binary (nor the bench) uses every fixture
#[allow(unused_imports)]
pub use fixtures::{cluster_source, cluster_source_every, kive_policy, pod, pod_in, policy};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
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
    /// Every kind, each served at its [`Kind::path`].
    const ALL: [Kind; 7] = [
        Kind::Pod,
        Kind::Policy,
        Kind::Namespace,
        Kind::KaPolicy,
        Kind::KaClusterPolicy,
        Kind::KaHostPolicy,
        Kind::Node,
    ];

    fn path(self) -> &'static str {
        match self {
            Kind::Pod => "/api/v1/pods",
            Kind::Policy => "/apis/kivebpf.san7o.github.io/v1/kivepolicies",
            Kind::Namespace => "/api/v1/namespaces",
            Kind::Node => "/api/v1/nodes",
            Kind::KaPolicy => "/apis/security.kubearmor.com/v1/kubearmorpolicies",
            Kind::KaClusterPolicy => "/apis/security.kubearmor.com/v1/kubearmorclusterpolicies",
            Kind::KaHostPolicy => "/apis/security.kubearmor.com/v1/kubearmorhostpolicies",
        }
    }

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
    installed: HashSet<Kind>,
    /// events.k8s.io/v1 Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
    /// Whether Event writes are refused (403, as without the RBAC rule).
    events_forbidden: bool,
}

impl Inner {
    /// Counts one request of `what` (read back by [`ApiServer::requests`]).
    fn count(&mut self, what: String) {
        *self.requests.entry(what).or_default() += 1;
    }

    /// Logs a change (for watches from an older resourceVersion) and sends
    /// it to the running watches.
    fn record(&mut self, change: Change) {
        self.log.push(change.clone());
        let _ = self.tx.send(change);
    }
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
        let app = Kind::ALL
            .into_iter()
            .fold(Router::new(), |app, kind| {
                app.route(kind.path(), watch::route(kind))
            })
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(events::create),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(events::patch),
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
        g.record(Change {
            rv,
            kind,
            ty,
            object,
        });
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
        g.record(Change {
            rv,
            kind,
            ty: "DELETED",
            object,
        });
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

/// A `Status` failure, as the real server answers one.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": {},
        "code": code.as_u16()});
    reply(code, &body)
}

/// `v` as a JSON answer.
fn reply(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}
