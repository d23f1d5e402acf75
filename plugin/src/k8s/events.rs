//! Kubernetes Events (`events.k8s.io/v1`) on policy objects: each refused
//! or rejected entry of a policy read from the API server is reported on
//! the policy itself (`kubectl describe kivepolicy …`), not only in kive's
//! log. One Event per (policy, reason, message), counted as a series when
//! it recurs on a new version of the policy; a re-list of the same version
//! posts nothing. Posting runs in the background: a failing Event API never
//! holds arming up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// `reportingController` of kive's Events.
pub const CONTROLLER: &str = "kive.san7o.github.io/kive";

/// Events the book remembers at most (then it starts over: at worst one
/// repeated Event per policy, never unbounded memory).
const BOOK_CAP: usize = 4096;

/// Longest `note` the API server accepts (1 kB).
const NOTE_MAX: usize = 1024;

/// One thing to report about a policy object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notice {
    /// `PascalCase` reason, e.g. `OutOfScope`.
    pub reason: &'static str,
    /// The error or warning text (names policy, trap or rule, and field).
    pub note: String,
}

/// What the API server is told: create an Event, or count a recurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    /// A new Event.
    Create(Box<Event>),
    /// The Event `name` in `namespace` occurred again: its series grows.
    Recur {
        /// Namespace of the Event.
        namespace: String,
        /// Name of the Event.
        name: String,
        /// The series as it is now.
        series: EventSeries,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: String,
    notice: Notice,
}

#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    resource_version: Option<String>,
}

/// Which Events were posted (pure): decides create, recur or nothing.
#[derive(Debug, Default)]
pub struct EventBook {
    seen: HashMap<Key, Seen>,
}

/// `kind/namespace/name/uid` of an object.
fn object_id(o: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}",
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default()
    )
}

fn truncate(note: &str) -> String {
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    let mut end = NOTE_MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

impl EventBook {
    /// What to post for `notice` about `object` (at its
    /// `resource_version`), or nothing when it was already reported for
    /// that version.
    pub fn note(
        &mut self,
        object: &ObjectReference,
        notice: &Notice,
        instance: &str,
        now: Timestamp,
    ) -> Option<Post> {
        let key = Key {
            object: object_id(object),
            notice: notice.clone(),
        };
        if let Some(seen) = self.seen.get_mut(&key) {
            if seen.resource_version == object.resource_version {
                return None;
            }
            seen.resource_version = object.resource_version.clone();
            seen.count = seen.count.saturating_add(1);
            return Some(Post::Recur {
                namespace: seen.namespace.clone(),
                name: seen.name.clone(),
                series: EventSeries {
                    count: seen.count,
                    last_observed_time: MicroTime(now),
                },
            });
        }
        if self.seen.len() >= BOOK_CAP {
            self.seen.clear();
        }
        // cluster-scoped objects get their Events in `default`, as kubectl
        // and client-go do
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("kive"),
            now.as_nanosecond()
        );
        self.seen.insert(
            key,
            Seen {
                namespace: namespace.clone(),
                name: name.clone(),
                count: 1,
                resource_version: object.resource_version.clone(),
            },
        );
        Some(Post::Create(Box::new(Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Arm".into()),
            reason: Some(notice.reason.into()),
            note: Some(truncate(&notice.note)),
            regarding: Some(object.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(instance.into()),
            type_: Some("Warning".into()),
            ..Default::default()
        })))
    }

    /// Forgets an Event whose posting failed: the next version of its
    /// policy tries again.
    pub fn failed(&mut self, namespace: &str, name: &str) {
        self.seen
            .retain(|_, s| !(s.namespace == namespace && s.name == name));
    }

    /// Forgets every Event of a deleted object.
    pub fn forget(&mut self, object: &ObjectReference) {
        let id = object_id(object);
        self.seen.retain(|k, _| k.object != id);
    }

    /// Events remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Counters of the Event reporter.
#[derive(Debug, Default)]
pub struct EventCounts {
    /// Events created or counted again.
    pub posted: AtomicU64,
    /// Posts the API server refused or that did not reach it.
    pub failed: AtomicU64,
    /// Reports dropped because the poster's queue was full.
    pub dropped: AtomicU64,
}

enum Job {
    Report(ObjectReference, Vec<Notice>),
    Forget(ObjectReference),
}

/// Reports notices as Events in the background; never blocks.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Job>,
    counts: Arc<EventCounts>,
}

impl EventSink {
    /// Starts the poster on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        client: Client,
        instance: String,
        counts: Arc<EventCounts>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(256);
        runtime.spawn(post_loop(client, instance, Arc::clone(&counts), rx));
        Self { tx, counts }
    }

    /// Queues the notices about `object` (dropped when the queue is full).
    pub fn report(&self, object: ObjectReference, notices: Vec<Notice>) {
        if !notices.is_empty() && self.tx.try_send(Job::Report(object, notices)).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The object was deleted: its Events are forgotten.
    pub fn forget(&self, object: ObjectReference) {
        let _ = self.tx.try_send(Job::Forget(object));
    }
}

async fn post_loop(
    client: Client,
    instance: String,
    counts: Arc<EventCounts>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut book = EventBook::default();
    let mut warned = false;
    while let Some(job) = rx.recv().await {
        let (object, notices) = match job {
            Job::Report(o, n) => (o, n),
            Job::Forget(o) => {
                book.forget(&o);
                continue;
            }
        };
        for notice in notices {
            let Some(post) = book.note(&object, &notice, &instance, Timestamp::now()) else {
                continue;
            };
            let (namespace, name) = match &post {
                Post::Create(e) => (
                    e.metadata.namespace.clone().unwrap_or_default(),
                    e.metadata.name.clone().unwrap_or_default(),
                ),
                Post::Recur {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
            };
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            let result = match post {
                Post::Create(e) => api.create(&PostParams::default(), &e).await.map(drop),
                Post::Recur { series, .. } => {
                    let patch = serde_json::json!({ "series": series });
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(drop)
                }
            };
            match result {
                Ok(()) => {
                    counts.posted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    book.failed(&namespace, &name);
                    // once at warn level: a missing RBAC rule must be seen,
                    // not repeated for every policy
                    if warned {
                        tracing::debug!("event {namespace}/{name}: {e}");
                    } else {
                        tracing::warn!(
                            "posting the Event {namespace}/{name} ({}): {e}; policy refusals stay in this log (RBAC: create and patch events.k8s.io events)",
                            notice.reason
                        );
                        warned = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("kivebpf.san7o.github.io/v1".into()),
            kind: Some("KivePolicy".into()),
            namespace: Some("tenant-a".into()),
            name: Some("p".into()),
            uid: Some("u1".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    fn notice(note: &str) -> Notice {
        Notice {
            reason: "OutOfScope",
            note: note.into(),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn first_report_creates_an_event_on_the_policy() {
        let mut b = EventBook::default();
        let Some(Post::Create(e)) = b.note(&obj("1"), &notice("n"), "kive-node-a", t(0)) else {
            panic!("a first notice creates an Event");
        };
        assert_eq!(e.metadata.namespace.as_deref(), Some("tenant-a"));
        assert!(e
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("p.")));
        assert_eq!(e.regarding, Some(obj("1")));
        assert_eq!(e.reason.as_deref(), Some("OutOfScope"));
        assert_eq!(e.note.as_deref(), Some("n"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reporting_controller.as_deref(), Some(CONTROLLER));
        assert_eq!(e.reporting_instance.as_deref(), Some("kive-node-a"));
        assert!(e.series.is_none());
    }

    #[test]
    fn a_relist_posts_nothing_and_a_new_version_counts_a_recurrence() {
        let mut b = EventBook::default();
        let Some(Post::Create(e)) = b.note(&obj("1"), &notice("n"), "i", t(0)) else {
            panic!("create");
        };
        assert_eq!(b.note(&obj("1"), &notice("n"), "i", t(5)), None);
        let Some(Post::Recur { name, series, .. }) = b.note(&obj("2"), &notice("n"), "i", t(9))
        else {
            panic!("a new version of the policy with the same refusal recurs");
        };
        assert_eq!(Some(name), e.metadata.name);
        assert_eq!(series.count, 2);
        assert_eq!(series.last_observed_time, MicroTime(t(9)));
        assert!(matches!(
            b.note(&obj("2"), &notice("other"), "i", t(9)),
            Some(Post::Create(_))
        ));
    }

    #[test]
    fn a_failed_post_or_a_deleted_policy_is_reported_again() {
        let mut b = EventBook::default();
        let Some(Post::Create(e)) = b.note(&obj("1"), &notice("n"), "i", t(0)) else {
            panic!("create");
        };
        b.failed("tenant-a", e.metadata.name.as_deref().unwrap_or_default());
        assert!(b.is_empty());
        assert!(matches!(
            b.note(&obj("1"), &notice("n"), "i", t(1)),
            Some(Post::Create(_))
        ));
        b.forget(&obj("7"));
        assert!(b.is_empty(), "forgotten whatever its version");
    }

    #[test]
    fn cluster_scoped_objects_report_in_default_and_long_notes_are_cut() {
        let mut o = obj("1");
        o.namespace = None;
        let long = "é".repeat(2000);
        let Some(Post::Create(e)) = b_note(&o, &long) else {
            panic!("create");
        };
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        let note = e.note.unwrap_or_default();
        assert!(
            note.len() <= NOTE_MAX && note.ends_with("..."),
            "{}",
            note.len()
        );
    }

    fn b_note(o: &ObjectReference, note: &str) -> Option<Post> {
        EventBook::default().note(o, &notice(note), "i", t(0))
    }
}
