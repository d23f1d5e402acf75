//! Turning one kernel event into alerts (one per entry armed on its key),
//! and the periodic loss report.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{AlertView, Entry, Owner, Runtime, Verdict};
use crate::alert::{rfc3339_nanos, AccessorMetadata, AlertMetadata, KiveAlert, LossMetadata};
use crate::node::procfs::process_details_of;
use crate::node::resolve::new_path_of;
use crate::policy::CompiledTrap;
use crate::sync::lock;
use crate::trap::{Hook, RawEvent};

impl Runtime {
    /// A kernel tamper event with the new path of a rename or link filled
    /// in: the name the hook captured, in its directory when that is where
    /// the file's pin is (else the bare name). `None` for other events.
    fn kernel_new_path(&self, raw: &RawEvent) -> Option<RawEvent> {
        let t = raw.tamper.as_ref().filter(|t| !t.new_name.is_empty())?;
        // the table only hands out the pin: no file work under its lock
        let pin = self.shared.table().shared_pin(raw.key);
        let path = pin
            .and_then(|p| new_path_of(&p, raw.key.dev, &t.new_name, t.new_dir_ino))
            .unwrap_or_else(|| t.new_name.clone());
        let mut placed = raw.clone();
        if let Some(t) = placed.tamper.as_mut() {
            t.new_path = path;
        }
        Some(placed)
    }

    /// The alerts of one event: one per entry armed on its key (a tamper
    /// event: for the entry that saw it). An event for a key no longer
    /// armed gives none (and is counted).
    pub fn alerts_for(&self, raw: &RawEvent) -> Vec<KiveAlert> {
        let mut alerts = Vec::new();
        let done: Result<(), Infallible> = self.each_alert(raw, |v| {
            alerts.push(v.alert());
            Ok(())
        });
        match done {
            Ok(()) => alerts,
            Err(never) => match never {},
        }
    }

    /// Calls `f` with each alert of one event, borrowed (see
    /// [`Runtime::alerts_for`]), without building it; a trap's callback
    /// still gets the alert's JSON. After `f`'s first error, the event's
    /// other hits still get their rate limit and callbacks, not `f`; the
    /// error is returned.
    pub fn each_alert<E>(
        &self,
        raw: &RawEvent,
        mut f: impl FnMut(&AlertView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let rescan = raw.hook == Hook::Rescan;
        let placed = (!rescan).then(|| self.kernel_new_path(raw)).flatten();
        let raw = placed.as_ref().unwrap_or(raw);
        // (entry id, trap, owner, the key is an inode that left the path);
        // nearly every key has one entry: the first is kept apart, so that
        // such an event allocates no list
        type Hit = (u32, Arc<CompiledTrap>, Owner, bool);
        let mut first: Option<Hit> = None;
        let mut more: Vec<Hit> = Vec::new();
        {
            let table = self.shared.table();
            let mut add = |e: &Entry| {
                let hit = (
                    e.id,
                    Arc::clone(&e.trap),
                    e.owner.clone(),
                    e.follows(raw.key),
                );
                match first {
                    None => first = Some(hit),
                    Some(_) => more.push(hit),
                }
            };
            if rescan {
                table.get(raw.trap_id).into_iter().for_each(&mut add);
            } else {
                table.entries_for(raw.key).for_each(&mut add);
            }
        }
        if first.is_none() {
            self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // the kernel captured the process at the access; /proc only fills gaps
        let gaps = raw.exe().is_empty() || raw.cwd().is_empty() || raw.args().is_empty();
        let details = if gaps && !rescan {
            process_details_of(&self.proc_root, raw.tgid, raw.comm(), raw.ts_boot_ns)
        } else {
            Default::default()
        };
        let accessor = if rescan { None } else { self.accessor(raw) };
        let mut failed = None;
        for (id, trap, owner, away) in first.iter().chain(&more) {
            let mut rate_limited = None;
            if let (Some(limit), false) = (trap.rate_limit, rescan) {
                let mut rl = lock(&self.limiter);
                match rl.check(limit, *id, raw.tgid, raw.ts_boot_ns) {
                    Verdict::Suppress => {
                        self.shared
                            .counters
                            .suppressed
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Verdict::Send { suppressed: n } => rate_limited = (n > 0).then_some(n),
                }
            }
            let view = AlertView {
                raw,
                trap,
                owner,
                node: &self.node,
                details: &details,
                accessor: accessor.as_deref(),
                rate_limited,
                away: *away,
            };
            if let (Some(cb), Some(url)) = (&self.callbacks, trap.callback.as_deref()) {
                if !url.is_empty() {
                    cb.send_from(&trap.origin.to_string(), url, &view.alert().to_json());
                }
            }
            if failed.is_none() {
                failed = f(&view).err();
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// A loss report when trap hits were lost since the previous one (ring
    /// buffer full, consumer queue full, held back by the kernel's flood
    /// limit), at most once per [`super::RuntimeConfig::loss_report`]; each one
    /// is also logged at WARN. Consumers call this between events: it
    /// reads the counters only once per period.
    pub fn loss_report(&self) -> Option<KiveAlert> {
        let now = std::time::Instant::now();
        let mut tracker = lock(&self.loss);
        if !tracker.due(now) {
            return None;
        }
        let m = self.metrics();
        let loss = tracker.check(
            now,
            LossMetadata {
                ring: m.kernel.drops,
                queue: m.queue_drops,
                limited: m.kernel.limited,
            },
        )?;
        drop(tracker);
        tracing::warn!(
            "{} trap hit(s) lost since the last report: ring={} (ring buffer full) queue={} (consumer queue full) limited={} (flood limit per trap and process)",
            loss.total(),
            loss.ring,
            loss.queue,
            loss.limited
        );
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Some(KiveAlert {
            alert_version: crate::alert::ALERT_VERSION.to_string(),
            timestamp: rfc3339_nanos(wall),
            metadata: AlertMetadata {
                kernel_id: self.node.kernel_id.clone(),
                loss: Some(loss),
                ..Default::default()
            },
            node: crate::alert::NodeMetadata {
                name: self.node.node_name.clone(),
            },
            ..Default::default()
        })
    }

    /// Who opened the file (see [`Accessors`]).
    fn accessor(&self, raw: &RawEvent) -> Option<Arc<AccessorMetadata>> {
        self.accessors.resolve(raw, |id| {
            let table = self.shared.table();
            let owner = table.entries().find_map(|e| match &e.owner {
                Owner::Container(o) if o.container_id.rsplit("://").next() == Some(id) => {
                    Some((**o).clone())
                }
                _ => None,
            });
            owner
        })
    }
}
