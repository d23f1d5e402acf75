//! An open capture: the replay reader or the live runtime, and the
//! batching of their alerts into Falco plugin events.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use falco_plugin::anyhow::{self, Error};
use falco_plugin::event::events::{Event, EventMetadata};
use falco_plugin::source::{EventBatch, PluginEvent, ProgressInfo, SourcePluginInstance};
use falco_plugin::FailureReason;

use super::async_events;
use super::config::{KiveConfig, Mode};
use super::error::FalcoError;
use super::payload::{encode, encode_view, KivePayload};
use super::replay::{Chunk, Fetched, Prefetch};
use super::webhook::{self, Listen, Webhook};
use super::{KivePlugin, SourceStats, PLUGIN_ID};
use crate::alert::text::escape;
use crate::alert::KiveAlert;
use crate::k8s::ClusterSource;
use crate::policy::{self, Compiled};
use crate::runtime::Runtime;
use crate::sync::lock;

/// Where an open capture takes its alerts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenTarget {
    /// The live engine with the configured policies.
    Live,
    /// A file of KiveAlert JSON lines.
    Replay(String),
    /// A webhook listen address (`http[s]://host:port/path`).
    Webhook(Listen),
}

/// Resolves `open_params` against the init config: empty = the config's
/// mode, `live` = live, `http[s]://host:port/path` = a webhook, anything
/// else = a file path to replay.
pub fn open_target(cfg: &KiveConfig, params: Option<&str>) -> Result<OpenTarget, FalcoError> {
    match params.map(str::trim).filter(|p| !p.is_empty()) {
        Some("live") => Ok(OpenTarget::Live),
        Some(url) if webhook::is_listen_url(url) => webhook::parse_listen(url)
            .map(OpenTarget::Webhook)
            .map_err(FalcoError::Webhook),
        Some(path) => Ok(OpenTarget::Replay(path.to_string())),
        None => match cfg.mode {
            Mode::Live => Ok(OpenTarget::Live),
            Mode::Replay => cfg
                .replay_file
                .clone()
                .filter(|f| !f.is_empty())
                .map(OpenTarget::Replay)
                .ok_or_else(|| FalcoError::Config {
                    key: "replayFile".into(),
                    message: "mode replay needs replayFile (or a file path in open_params)".into(),
                }),
        },
    }
}

/// Reads and compiles the configured policy sources.
pub fn load_policies(cfg: &KiveConfig) -> Result<Compiled, FalcoError> {
    if cfg.policy_files.is_empty()
        && cfg.policies.as_deref().unwrap_or("").trim().is_empty()
        && !cfg.kubernetes.enabled
    {
        return Err(FalcoError::NoPolicySource);
    }
    let mut all = Compiled::default();
    for f in &cfg.policy_files {
        let text = std::fs::read_to_string(f).map_err(|source| FalcoError::Io {
            path: f.clone(),
            source,
        })?;
        all.extend(policy::load_str(f, &text));
    }
    if let Some(text) = cfg.policies.as_deref().filter(|t| !t.trim().is_empty()) {
        all.extend(policy::load_str("init_config.policies", text));
    }
    Ok(all)
}

/// An open capture of the kive source.
pub struct KiveInstance {
    source: Source,
    buf: Vec<u8>,
    batch_size: usize,
    wait: Duration,
    stats: Arc<SourceStats>,
    /// Inject each alert into the syscall source too (`asyncEvents`).
    async_events: bool,
}

enum Source {
    Replay {
        prefetch: Prefetch,
        chunk: Option<(Chunk, usize)>,
    },
    /// The runtime, and the cluster source feeding it pod traps (held only
    /// to be stopped with the capture).
    Live(
        Arc<Mutex<Runtime>>,
        #[allow(dead_code)] Option<ClusterSource>,
    ),
    /// Alerts POSTed to the webhook.
    Webhook(Webhook),
}

// Falco opens the capture on its main thread and calls next_batch on the
// source's thread, and get_metrics may come from yet another: the instance
// and the runtime it shares with the plugin must be Send.
const _: () = {
    fn send<T: Send>() {}
    let _ = send::<KiveInstance>;
    let _ = send::<Runtime>;
};

/// Chunks the replay thread may run ahead by.
const REPLAY_DEPTH: usize = 16;

impl KiveInstance {
    /// Opens the replay file or starts the live engine.
    pub(super) fn open(
        cfg: &KiveConfig,
        params: Option<&str>,
        stats: Arc<SourceStats>,
    ) -> Result<Self, FalcoError> {
        let source = match open_target(cfg, params)? {
            OpenTarget::Replay(path) => {
                let prefetch = Prefetch::start(
                    Path::new(&path),
                    cfg.batch_size as usize,
                    REPLAY_DEPTH,
                    Arc::clone(&stats.malformed),
                )?;
                log::info!("kive: replaying {}", escape(&path));
                Source::Replay {
                    prefetch,
                    chunk: None,
                }
            }
            OpenTarget::Webhook(listen) => Source::Webhook(
                Webhook::start(&listen, &cfg.webhook, Arc::clone(&stats.webhook))
                    .map_err(FalcoError::Webhook)?,
            ),
            OpenTarget::Live => {
                let compiled = load_policies(cfg)?;
                for e in &compiled.errors {
                    log::error!("kive: {}", escape(&e.to_string()));
                }
                for w in &compiled.warnings {
                    log::warn!("kive: {w}");
                }
                if compiled.traps.is_empty() && !cfg.kubernetes.enabled {
                    let errors: Vec<String> =
                        compiled.errors.iter().map(ToString::to_string).collect();
                    return Err(FalcoError::NoTraps(errors.join("; ")));
                }
                let (rt, report) = Runtime::start(&cfg.runtime_config(), &compiled.traps)
                    .map_err(FalcoError::Engine)?;
                for w in &report.warnings {
                    log::warn!("kive: {}", escape(w));
                }
                for f in &report.failures {
                    log::error!("kive: {} (kept pending, retried)", escape(f));
                }
                if !cfg.kubernetes.enabled {
                    for t in &report.needs_cluster {
                        log::warn!(
                            "kive: {t}: targets pods: needs the Kubernetes policy source (kubernetes.enabled), not armed"
                        );
                    }
                }
                let rc = cfg.runtime_config();
                let cluster = match cfg.cluster_config(&rc.node_name) {
                    Some(cc) => Some(
                        ClusterSource::start(cc, rt.pod_controller())
                            .map_err(FalcoError::Cluster)?,
                    ),
                    None => None,
                };
                log::info!(
                    "kive: live on the {} tier: armed={} pending={} rejected={}",
                    rt.tier(),
                    report.armed,
                    report.failures.len(),
                    compiled.errors.len()
                );
                let rt = Arc::new(Mutex::new(rt));
                *lock(&stats.live) = Arc::downgrade(&rt);
                Source::Live(rt, cluster)
            }
        };
        Ok(Self {
            source,
            buf: Vec::with_capacity(1024),
            batch_size: cfg.batch_size as usize,
            wait: Duration::from_millis(cfg.batch_timeout_ms),
            stats,
            async_events: cfg.async_events,
        })
    }

    /// Appends one alert to the batch.
    fn add(
        buf: &mut Vec<u8>,
        batch: &mut EventBatch,
        alert: &KiveAlert,
        inject: Option<&SourceStats>,
    ) -> Result<(), Error> {
        encode(alert, buf)?;
        Self::add_encoded(buf, alert.timestamp_ns(), batch)?;
        if let Some(stats) = inject {
            Self::inject(stats, buf, alert.timestamp_ns());
        }
        Ok(())
    }

    /// Hands one encoded alert to the async captures (`asyncEvents`).
    fn inject(stats: &SourceStats, data: &[u8], ts: u64) {
        let n = async_events::emit(data, ts);
        stats.async_injected.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Appends one encoded payload with its wall-clock timestamp.
    fn add_encoded(buf: &[u8], ts: u64, batch: &mut EventBatch) -> Result<(), Error> {
        let event = Event {
            metadata: EventMetadata {
                // u64::MAX lets the framework stamp an alert without a time
                ts: if ts == 0 { u64::MAX } else { ts },
                tid: -1,
            },
            params: PluginEvent {
                plugin_id: PLUGIN_ID,
                event_data: KivePayload(buf),
            },
        };
        batch.add(event)?;
        Ok(())
    }

    /// Events of the replay queue; `None` at the end of the file.
    fn next_replay(&mut self, batch: &mut EventBatch) -> Result<Option<usize>, Error> {
        let Source::Replay { prefetch, chunk } = &mut self.source else {
            unreachable!("replay source");
        };
        let mut n = 0;
        while n < self.batch_size {
            if let Some((c, i)) = chunk {
                while *i < c.len() && n < self.batch_size {
                    let (data, ts) = c.get(*i);
                    Self::add_encoded(data, ts, batch)?;
                    if self.async_events {
                        Self::inject(&self.stats, data, ts);
                    }
                    *i += 1;
                    n += 1;
                }
                if *i < c.len() {
                    break;
                }
                *chunk = None;
            }
            // wait for the first events only; then take what is ready
            let wait = if n == 0 { self.wait } else { Duration::ZERO };
            match prefetch.next_chunk(wait)? {
                Fetched::Chunk(c) => *chunk = Some((c, 0)),
                Fetched::Pending => break,
                Fetched::End if n == 0 => return Ok(None),
                Fetched::End => break,
            }
        }
        Ok(Some(n))
    }

    /// Alerts POSTed to the webhook. Never injected as async events: the
    /// thread ids of another node's alerts mean nothing in this node's
    /// syscall stream.
    fn next_webhook(&mut self, batch: &mut EventBatch) -> Result<usize, Error> {
        let Source::Webhook(hook) = &self.source else {
            unreachable!("webhook source");
        };
        let mut n = 0;
        while n < self.batch_size {
            let wait = if n == 0 { self.wait } else { Duration::ZERO };
            let Some((data, ts)) = hook.next(wait) else {
                break;
            };
            Self::add_encoded(&data, ts, batch)?;
            n += 1;
        }
        Ok(n)
    }

    fn next_live(&mut self, batch: &mut EventBatch) -> Result<usize, Error> {
        let Source::Live(rt, _) = &self.source else {
            unreachable!("live source");
        };
        let rt = lock(rt);
        let inject = self.async_events.then_some(&*self.stats);
        let deadline = Instant::now() + self.wait;
        let mut n = 0;
        // lost hits reach Falco as an event too, not only as a metric
        if let Some(report) = rt.loss_report() {
            Self::add(&mut self.buf, batch, &report, None)?;
            n += 1;
        }
        while n < self.batch_size {
            let ev = if n == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                rt.next_event(left)
            } else {
                rt.try_next_event()
            };
            let Some(ev) = ev else { break };
            // the payload straight from the event and its entries: no alert built
            let buf = &mut self.buf;
            rt.each_alert(&ev, |view| -> Result<(), Error> {
                let ts = encode_view(view, buf)?;
                Self::add_encoded(buf, ts, batch)?;
                if let Some(stats) = inject {
                    Self::inject(stats, buf, ts);
                }
                n += 1;
                Ok(())
            })?;
        }
        Ok(n)
    }
}

impl SourcePluginInstance for KiveInstance {
    type Plugin = KivePlugin;

    fn next_batch(
        &mut self,
        _plugin: &mut KivePlugin,
        batch: &mut EventBatch,
    ) -> Result<(), Error> {
        batch.reserve(self.batch_size.min(1024));
        let n = match self.source {
            Source::Replay { .. } => match self.next_replay(batch)? {
                None => {
                    return Err(anyhow::anyhow!("replay finished").context(FailureReason::Eof));
                }
                Some(0) => {
                    return Err(
                        anyhow::anyhow!("replay: reading ahead").context(FailureReason::Timeout)
                    );
                }
                Some(n) => n,
            },
            Source::Live(..) | Source::Webhook(_) => {
                let n = match self.source {
                    Source::Webhook(_) => self.next_webhook(batch)?,
                    _ => self.next_live(batch)?,
                };
                if n == 0 {
                    // never Ok with an empty batch: Falco treats that as fatal
                    return Err(anyhow::anyhow!("no trap hit").context(FailureReason::Timeout));
                }
                n
            }
        };
        self.stats.delivered.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    fn get_progress(&mut self) -> ProgressInfo<'_> {
        match &self.source {
            Source::Replay { prefetch, .. } => ProgressInfo {
                value: prefetch.progress() * 100.0,
                detail: None,
            },
            Source::Live(..) | Source::Webhook(_) => ProgressInfo {
                value: 0.0,
                detail: None,
            },
        }
    }
}

impl Drop for KiveInstance {
    fn drop(&mut self) {
        if let Source::Live(..) = self.source {
            log::info!("kive: live capture closed: engine stopped, programs detached");
        }
    }
}
