//! The cluster source's reconcile loop: waits for changes, plans what they
//! ask for (everything, or only the pods that changed) and applies it to
//! the runtime's pod controller.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::convert::{plan, plan_pod, PolicyEntry};
use super::source::{Labels, State, LIST_GRACE, NOT_READY_RETRY, UNLOCATED_RETRY};
use crate::runtime::{DesiredEntry, PodController, PodDesired};
use crate::sync::lock;

/// One reconcile's input: every wanted entry, or those of the pods that
/// changed.
enum Work {
    Full(Vec<DesiredEntry>),
    Pods(Vec<PodDesired>),
}

/// Reconciles until the source's runtime shuts down.
pub(super) async fn run(
    st: Arc<State>,
    controller: PodController,
    node: String,
    resync: Duration,
    started: Instant,
) {
    // until the first reconcile, look again soon: the list grace
    // ends without a watch event to wake this loop
    let mut wait = NOT_READY_RETRY.min(resync);
    let mut last_full = Instant::now();
    let mut unlocated = false;
    loop {
        let timer = tokio::select! {
            _ = st.changed.notified() => false,
            _ = tokio::time::sleep(wait) => true,
        };
        // let a burst of watch events settle into one full reconcile;
        // a pod's change costs that pod only: applied at once (what
        // comes in meanwhile waits for the next one)
        if (timer && !unlocated) || lock(&st.dirty).full {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // one first reconcile with everything that lists: KivePolicies and
        // pods are waited for; the rest (labels, KubeArmor kinds) only
        // until each lists or fails, or the grace ends, so that a source
        // that may not list them never holds the traps back
        let past_grace = started.elapsed() > LIST_GRACE;
        let ready = {
            let p = lock(&st.policies);
            p.get("kivepolicy").is_some_and(|s| s.synced)
                && p.values().all(|s| s.settled() || past_grace)
        } && lock(&st.pods).synced
            && (lock(&st.namespaces).settled() || past_grace)
            && (lock(&st.node).settled() || past_grace);
        if !ready {
            continue;
        }
        wait = if unlocated {
            UNLOCATED_RETRY.min(resync)
        } else {
            resync
        };
        // a resync: every entry again (pending ones retried); before
        // it, a retry of the entries whose container was not found
        let retry = timer && unlocated && last_full.elapsed() < resync;
        if timer && !retry {
            lock(&st.dirty).full = true;
        }
        let (full, dirty) = {
            let mut d = lock(&st.dirty);
            (
                std::mem::replace(&mut d.full, false),
                std::mem::take(&mut d.pods),
            )
        };
        if !full && dirty.is_empty() && !retry {
            continue;
        }
        if full {
            last_full = Instant::now();
        }
        let work = {
            let policies = lock(&st.policies);
            let pods = lock(&st.pods);
            let entries: Vec<&PolicyEntry> = policies
                .values()
                .flat_map(|s| s.items().map(|(_, p)| p))
                .collect();
            st.status.rejected.store(
                entries.iter().map(|p| p.errors.len()).sum(),
                Ordering::Relaxed,
            );
            let namespaces = lock(&st.namespaces);
            let ns_labels = namespaces.map();
            if full {
                let node_labels: Option<Labels> =
                    lock(&st.node).items().map(|(_, v)| v.clone()).next();
                Work::Full(plan(
                    entries.iter().copied(),
                    pods.items().map(|(_, v)| v),
                    ns_labels,
                    &node,
                    node_labels.as_deref(),
                ))
            } else {
                let traps: Vec<_> = entries.iter().flat_map(|p| &p.traps).collect();
                Work::Pods(
                    dirty
                        .into_iter()
                        .map(|key| PodDesired {
                            entries: pods
                                .get(&key)
                                .map(|v| plan_pod(&traps, v, ns_labels, &node))
                                .unwrap_or_default(),
                            pod: key,
                        })
                        .collect(),
                )
            }
        };
        let ctrl = controller.clone();
        let report = tokio::task::spawn_blocking(move || {
            let report = match work {
                Work::Full(desired) => ctrl.reconcile(&desired),
                Work::Pods(pods) => ctrl.reconcile_pods(&pods),
            };
            // a large change (a cold start, a re-list) freed tens of MiB
            // on several threads (the pod list decoded, the plan, the
            // diff, the table grown): give the free pages back, once the
            // plan is dropped too
            if crate::node::heap::worth_releasing(report.added + report.removed) {
                crate::node::heap::release_free();
            }
            report
        })
        .await;
        let Ok(report) = report else { continue };
        unlocated = report.unlocated > 0;
        if unlocated {
            wait = UNLOCATED_RETRY.min(resync);
        }
        if report.added > 0 || report.removed > 0 {
            tracing::info!(
                "reconciled: +{} -{} pod trap(s), {} armed, {} pending",
                report.added,
                report.removed,
                report.armed,
                report.pending.len()
            );
        }
        for p in &report.pending {
            tracing::debug!("pending: {p}");
        }
        st.status.armed.store(report.armed, Ordering::Relaxed);
        st.status
            .pending
            .store(report.pending.len(), Ordering::Relaxed);
        st.status.touched.store(report.touched, Ordering::Relaxed);
        st.status.reconciles.fetch_add(1, Ordering::Relaxed);
        *lock(&st.status.last_reconcile) = Some(SystemTime::now());
    }
}
