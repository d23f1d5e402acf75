//! The cluster source: watches KivePolicies (all namespaces) and the pods of
//! this node, and keeps the runtime's pod traps equal to what they ask for.
//! Runs on its own small tokio runtime; stopping it never disarms anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use thiserror::Error;
use tokio::sync::Notify;

use super::convert::{object_key, pod_view, PolicyEntry};
use super::events::{EventCounts, EventSink};
use super::store::{map_event, Store};
use crate::policy::kubearmor::{Kind, GROUP as KA_GROUP, VERSION as KA_VERSION};
use crate::policy::pods::PodView;
use crate::policy::scope::ScopeConfig;
use crate::runtime::PodController;
use crate::sync::lock;

/// Where the API server is and which node this is.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// A kubeconfig file; `None` = in-cluster (service account), then the
    /// usual kubeconfig lookup.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (pods are watched with `spec.nodeName=<node>`).
    pub node_name: String,
    /// Reconcile at least this often (containers starting, files appearing).
    pub resync: Duration,
    /// Which namespaces' policies apply cluster-wide; host traps or not.
    pub scope: ScopeConfig,
}

/// Cluster source errors.
#[derive(Debug, Error)]
pub enum K8sError {
    /// No usable client configuration.
    #[error("kubernetes client configuration")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The tokio runtime could not start.
    #[error("starting the cluster source's runtime")]
    Runtime(#[source] std::io::Error),
    /// No node name.
    #[error("the node name is empty: set nodeName or NODE_NAME")]
    NoNode,
}

/// Counters of the cluster source.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Reconciles done.
    pub reconciles: AtomicU64,
    /// Pod entries armed after the last reconcile.
    pub armed: AtomicUsize,
    /// Pod entries pending after the last reconcile.
    pub pending: AtomicUsize,
    /// Entries the last reconcile looked at (a pod's change: that pod's).
    pub touched: AtomicUsize,
    /// Policy traps rejected (all policies).
    pub rejected: AtomicUsize,
    /// Wall-clock time of the last reconcile.
    pub last_reconcile: Mutex<Option<SystemTime>>,
    /// Watch errors seen (the watchers retry with backoff).
    pub watch_errors: AtomicU64,
    /// Events posted about policies (refused entries), and failed posts.
    pub events: Arc<EventCounts>,
}

pub(super) type Labels = crate::policy::pods::Labels;

/// How long the first reconcile waits for the stores that do not hold
/// traps back (namespace and node labels, KubeArmor kinds) to list or fail;
/// a failed list (not allowed, CRD not installed) is not waited for.
pub(super) const LIST_GRACE: Duration = Duration::from_secs(10);
/// How soon entries whose container was not found yet are retried (the
/// container locator walks the cgroup tree at most once a second).
pub(super) const UNLOCATED_RETRY: Duration = Duration::from_secs(1);
/// How often readiness is checked again before the first reconcile.
pub(super) const NOT_READY_RETRY: Duration = Duration::from_millis(200);

pub(super) struct State {
    /// One store per policy kind (each watcher re-lists its own).
    pub(super) policies: Mutex<BTreeMap<&'static str, Store<PolicyEntry>>>,
    pub(super) pods: Mutex<Store<PodView>>,
    pub(super) namespaces: Mutex<Store<Labels>>,
    /// This node's labels (a store of at most one object).
    pub(super) node: Mutex<Store<Labels>>,
    pub(super) changed: Notify,
    /// What changed since the last reconcile.
    pub(super) dirty: Mutex<Dirty>,
    pub(super) status: Arc<ClusterStatus>,
}

/// What the next reconcile must look at: everything (a policy, namespace or
/// node changed, a re-list, a resync), or only some pods.
#[derive(Debug)]
pub(super) struct Dirty {
    pub(super) full: bool,
    pub(super) pods: BTreeSet<String>,
}

impl State {
    /// Something other than one pod changed: the next reconcile is full.
    pub(super) fn changed_all(&self) {
        lock(&self.dirty).full = true;
        self.changed.notify_one();
    }
}

/// The running cluster source.
pub struct ClusterSource {
    runtime: Option<tokio::runtime::Runtime>,
    status: Arc<ClusterStatus>,
}

/// The KivePolicy resource as a dynamic type: each object is decoded trap
/// by trap, so one malformed object or trap never breaks the watch.
pub fn kivepolicy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kivebpf.san7o.github.io", "v1", "KivePolicy"),
        "kivepolicies",
    )
}

async fn client(cfg: &ClusterConfig) -> Result<Client, K8sError> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| K8sError::Config(Box::new(e)))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Config(Box::new(e)))?
        }
        None => Config::infer()
            .await
            .map_err(|e| K8sError::Config(Box::new(e)))?,
    };
    Client::try_from(config).map_err(|e| K8sError::Config(Box::new(e)))
}

impl ClusterSource {
    /// Connects (lazily: an unreachable server is retried, not an error)
    /// and starts watching and reconciling into `controller`.
    pub fn start(cfg: ClusterConfig, controller: PodController) -> Result<Self, K8sError> {
        if cfg.node_name.is_empty() {
            return Err(K8sError::NoNode);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kive-k8s")
            .enable_all()
            .build()
            .map_err(K8sError::Runtime)?;
        let client = runtime.block_on(client(&cfg))?;
        let status = Arc::new(ClusterStatus::default());
        let state = Arc::new(State {
            policies: Mutex::new(BTreeMap::new()),
            pods: Mutex::new(Store::default()),
            namespaces: Mutex::new(Store::default()),
            node: Mutex::new(Store::default()),
            changed: Notify::new(),
            // the first reconcile is a full one
            dirty: Mutex::new(Dirty {
                full: true,
                pods: BTreeSet::new(),
            }),
            status: Arc::clone(&status),
        });

        let events = EventSink::start(
            runtime.handle(),
            client.clone(),
            format!("kive-{}", cfg.node_name),
            Arc::clone(&status.events),
        );
        let scope = cfg.scope.clone();
        spawn_policy_watch(
            &runtime,
            Api::<DynamicObject>::all_with(client.clone(), &kivepolicy_resource()),
            Arc::clone(&state),
            events.clone(),
            "kivepolicy",
            move |o| super::convert::policy_entry(o, &scope),
        );
        for kind in [Kind::Policy, Kind::ClusterPolicy, Kind::HostPolicy] {
            let scope = cfg.scope.clone();
            spawn_policy_watch(
                &runtime,
                Api::<DynamicObject>::all_with(client.clone(), &kubearmor_resource(kind)),
                Arc::clone(&state),
                events.clone(),
                kind.as_str(),
                move |o| super::convert::kubearmor_entry(o, kind, &scope),
            );
        }

        // namespace labels are context for alerts only: a watcher that is not
        // allowed to list namespaces leaves them empty and holds nothing up
        spawn_labels_watch(
            &runtime,
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            Arc::clone(&state),
            |s| &s.namespaces,
            ("namespace", "namespace labels missing from alerts"),
        );
        // this node's labels select KubeArmorHostPolicies (`nodeSelector`):
        // until they are known, a host policy with a selector is not armed
        spawn_labels_watch(
            &runtime,
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name)),
            Arc::clone(&state),
            |s| &s.node,
            (
                "node",
                "host policies with a nodeSelector wait for the node's labels",
            ),
        );

        let pods = Api::<Pod>::all(client);
        let selector = format!("spec.nodeName={}", cfg.node_name);
        let st = Arc::clone(&state);
        runtime.spawn(async move {
            let stream =
                watcher(pods, watcher::Config::default().fields(&selector)).default_backoff();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        let ev = map_event(ev, |p: Pod| {
                            let v = pod_view(&p);
                            (object_key(Some(&v.namespace), Some(&v.name)), v)
                        });
                        // one pod added, changed or deleted: that pod's
                        // entries only; a re-list: everything
                        let one = match &ev {
                            watcher::Event::Apply((k, _)) | watcher::Event::Delete((k, _)) => {
                                Some(k.clone())
                            }
                            _ => None,
                        };
                        if lock(&st.pods).apply(ev) {
                            match one {
                                Some(k) => {
                                    lock(&st.dirty).pods.insert(k);
                                    st.changed.notify_one();
                                }
                                None => st.changed_all(),
                            }
                        }
                    }
                    Err(e) => {
                        st.status.watch_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("pod watch: {e} (retrying; armed traps stay armed)");
                    }
                }
            }
        });

        let st = Arc::clone(&state);
        let node = cfg.node_name.clone();
        let resync = cfg.resync;
        let started = std::time::Instant::now();
        runtime.spawn(super::reconcile::run(st, controller, node, resync, started));
        Ok(Self {
            runtime: Some(runtime),
            status,
        })
    }

    /// Counters.
    pub fn status(&self) -> &ClusterStatus {
        &self.status
    }
}

/// A KubeArmor policy resource as a dynamic type.
pub fn kubearmor_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(KA_GROUP, KA_VERSION, kind.as_str()),
        kind.plural(),
    )
}

/// Whether a watch error is the resource being absent (its CRD is not
/// installed): not an error, the watcher retries and picks it up later.
fn is_absent(e: &watcher::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("404") || text.contains("NotFound")
}

/// Watches the labels of one kind of object into a store of `State`; the
/// watch failing (e.g. not allowed) leaves the store empty and is counted.
fn spawn_labels_watch<K>(
    runtime: &tokio::runtime::Runtime,
    api: Api<K>,
    config: watcher::Config,
    st: Arc<State>,
    store: fn(&State) -> &Mutex<Store<Labels>>,
    (what, meaning): (&'static str, &'static str),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    runtime.spawn(async move {
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut warned = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    let ev = map_event(ev, |o: K| {
                        let meta = o.meta();
                        (
                            meta.name.clone().unwrap_or_default(),
                            Arc::new(meta.labels.clone().unwrap_or_default()),
                        )
                    });
                    if lock(store(&st)).apply(ev) {
                        st.changed_all();
                    }
                }
                Err(e) => {
                    st.status.watch_errors.fetch_add(1, Ordering::Relaxed);
                    lock(store(&st)).errored = true;
                    if std::mem::replace(&mut warned, true) {
                        tracing::debug!("{what} watch: {e}");
                    } else {
                        tracing::warn!("{what} watch: {e} (retrying; {meaning})");
                    }
                }
            }
        }
    });
}

/// Watches one policy kind into the policy store (keys `label/ns/name`).
fn spawn_policy_watch(
    runtime: &tokio::runtime::Runtime,
    api: Api<DynamicObject>,
    st: Arc<State>,
    events: EventSink,
    label: &'static str,
    convert: impl Fn(&DynamicObject) -> PolicyEntry + Send + 'static,
) {
    // known before it lists: the first reconcile waits for every kind
    lock(&st.policies).entry(label).or_default();
    runtime.spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut absent_logged = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    let ev = map_event(ev, |o: DynamicObject| {
                        let entry = convert(&o);
                        (format!("{label}/{}", entry.name), entry)
                    });
                    let (added, removed) = describe(&ev);
                    let initial = matches!(ev, watcher::Event::InitApply(_));
                    let changed = lock(&st.policies).entry(label).or_default().apply(ev);
                    if changed || initial {
                        if let Some(p) = added {
                            tracing::info!(
                                "{label} {} applied: {} trap(s) in scope, {} rejected",
                                p.name,
                                p.traps.len(),
                                p.errors.len()
                            );
                            for e in &p.errors {
                                tracing::error!("{e}");
                            }
                            for w in &p.warnings {
                                tracing::warn!("{w}");
                            }
                            for t in &p.traps {
                                for w in &t.warnings {
                                    tracing::warn!("{w}");
                                }
                            }
                            events.report(p.object.clone(), p.notices());
                        }
                        if let Some(gone) = removed {
                            tracing::info!("{label} {} deleted", gone.name);
                            events.forget(gone.object);
                        }
                        st.changed_all();
                    }
                }
                Err(e) if is_absent(&e) => {
                    // an uninstalled CRD: nothing to watch yet, not an error
                    lock(&st.policies).entry(label).or_default().errored = true;
                    if !absent_logged {
                        tracing::info!(
                            "{label}: resource not served (CRD not installed): watching for it"
                        );
                        absent_logged = true;
                    }
                }
                Err(e) => {
                    st.status.watch_errors.fetch_add(1, Ordering::Relaxed);
                    lock(&st.policies).entry(label).or_default().errored = true;
                    tracing::warn!("{label} watch: {e} (retrying; armed traps stay armed)");
                }
            }
        }
    });
}

fn describe(
    ev: &watcher::Event<(String, PolicyEntry)>,
) -> (Option<PolicyEntry>, Option<PolicyEntry>) {
    match ev {
        watcher::Event::Apply((_, p)) | watcher::Event::InitApply((_, p)) => {
            (Some(p.clone()), None)
        }
        watcher::Event::Delete((_, p)) => (None, Some(p.clone())),
        _ => (None, None),
    }
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
