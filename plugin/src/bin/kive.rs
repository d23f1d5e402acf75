//! `kive`: the trap engine without Falco or a cluster.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use kive::alert::text::to_text;
use kive::callback::DestinationConfig;
use kive::k8s::{ClusterConfig, ClusterSource};
use kive::policy::scope::ScopeConfig;
use kive::policy::{self, Compiled};
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::{FloodLimit, TierChoice};

/// The policy `kive run` arms when no --policy is given.
const DEFAULT_POLICY: &str = include_str!("../../../examples/host-policy.yaml");

#[derive(Parser)]
#[command(
    name = "kive",
    version,
    about = "eBPF file tripwires (standalone kive engine)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// One KiveAlert v1 JSON object per line.
    Json,
    /// One human-readable line per alert.
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Arm the traps of KivePolicy files that target this node and print alerts.
    Run(RunArgs),
    /// Print the KivePolicy CRD (generated from the Rust types).
    Crd,
    /// Check KivePolicy files and print what each trap targets.
    Check {
        /// KivePolicy YAML file(s).
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
}

/// `kive run`.
#[derive(clap::Args)]
struct RunArgs {
    /// KivePolicy YAML file(s); without one, the embedded example host policy.
    #[arg(long = "policy", value_name = "FILE")]
    policies: Vec<PathBuf>,
    /// Hook tier: auto, lsm, trampoline, fentry, tracepoint, tracepoint-classic, fanotify.
    #[arg(long, default_value = "auto")]
    tier: TierChoice,
    /// Output format of alerts on stdout.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Ring buffer size in bytes (power of two). From 1 MiB on (eBPF tiers)
    /// the print loop reads the ring itself; a smaller ring gets a reader
    /// thread.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    ring_bytes: u32,
    /// The kernel's flood limit: events one process may report per trap per
    /// window on average (0 = no limit); the rest are counted, carried in
    /// its next alert (`suppressed`) and reported as lost.
    #[arg(long, default_value_t = FloodLimit::default().events)]
    flood_limit: u32,
    /// The flood limit's window (milliseconds).
    #[arg(long, default_value_t = FloodLimit::default().window.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    flood_window_ms: u64,
    /// Events of one process per trap that may come at once.
    #[arg(long, default_value_t = FloodLimit::default().burst)]
    flood_burst: u32,
    /// Node name in alerts (default: $NODE_NAME, else the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Re-resolve armed paths this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    rescan_ms: u64,
    /// Also arm pod traps from the cluster, reading KivePolicies and this
    /// node's pods from the API server of this kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Also arm pod traps from the cluster, with the in-cluster
    /// service-account configuration.
    #[arg(long, conflicts_with = "kubeconfig")]
    in_cluster: bool,
    /// Also print the alerts of traps that have a callback (like kivebpf,
    /// they are only POSTed to the callback by default).
    #[arg(long)]
    print_callback_alerts: bool,
    /// Extra CA certificates (PEM) for HTTPS callbacks.
    #[arg(long, value_name = "FILE")]
    callback_ca: Option<PathBuf>,
    /// A namespace whose KivePolicies may select pods of every namespace
    /// (repeatable; default kivebpf-system). Policies of other namespaces
    /// act only on pods of their own namespace.
    #[arg(long = "cluster-wide-namespace", value_name = "NAMESPACE")]
    cluster_wide_namespaces: Vec<String>,
    /// Arm `host: true` traps of KivePolicies read from the cluster (from
    /// cluster-wide namespaces only); rejected by default.
    #[arg(long)]
    allow_cluster_host_traps: bool,
    /// Let callbacks reach loopback addresses (refused by default).
    #[arg(long)]
    callback_allow_loopback: bool,
    /// Let callbacks reach link-local addresses (refused by default).
    #[arg(long)]
    callback_allow_link_local: bool,
    /// Let callbacks reach cloud metadata services (refused by default).
    #[arg(long)]
    callback_allow_metadata: bool,
    /// The only callback destinations (repeatable): a host name, an address
    /// or a CIDR.
    #[arg(long = "callback-allowed-host", value_name = "HOST|CIDR")]
    callback_allowed_hosts: Vec<String>,
}

fn load(policies: &[PathBuf]) -> Compiled {
    if policies.is_empty() {
        return policy::load_str("(embedded examples/host-policy.yaml)", DEFAULT_POLICY);
    }
    let mut all = Compiled::default();
    for p in policies {
        let name = p.display().to_string();
        match std::fs::read_to_string(p) {
            Ok(text) => all.extend(policy::load_str(&name, &text)),
            Err(e) => all.errors.push(policy::PolicyError::Document {
                document: name,
                field: "(file)".into(),
                message: e.to_string(),
            }),
        }
    }
    all
}

fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        policies,
        tier,
        format,
        ring_bytes,
        flood_limit,
        flood_window_ms,
        flood_burst,
        node_name,
        rescan_ms,
        kubeconfig,
        in_cluster,
        print_callback_alerts,
        callback_ca,
        cluster_wide_namespaces,
        allow_cluster_host_traps,
        callback_allow_loopback,
        callback_allow_link_local,
        callback_allow_metadata,
        callback_allowed_hosts,
    } = args;
    // Some(kubeconfig or in-cluster) when pod traps come from a cluster
    let cluster = match (kubeconfig, in_cluster) {
        (Some(k), _) => Some(Some(k)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let compiled = if policies.is_empty() && cluster.is_some() {
        Compiled::default()
    } else {
        load(&policies)
    };
    for e in &compiled.errors {
        tracing::error!("{e}");
    }
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let mut cfg = RuntimeConfig::default();
    cfg.engine.tier = tier;
    cfg.engine.ring_bytes = ring_bytes;
    cfg.engine.flood_limit = FloodLimit {
        events: flood_limit,
        window: Duration::from_millis(flood_window_ms),
        burst: flood_burst,
    };
    cfg.rescan = Duration::from_millis(rescan_ms.max(10));
    // the loop below always waits for events: it reads the ring itself
    // where the settings allow (as Falco's next_batch does)
    cfg.read_in_caller = cfg.caller_read_fits();
    if let Some(n) = node_name {
        cfg.node_name = n;
    }
    if let Some(cb) = cfg.callbacks.as_mut() {
        cb.ca_bundle = callback_ca;
        cb.destinations = DestinationConfig {
            allow_loopback: callback_allow_loopback,
            allow_link_local: callback_allow_link_local,
            allow_metadata: callback_allow_metadata,
            allowed: callback_allowed_hosts,
        };
    }
    // before arming: SIGINT/SIGTERM while thousands of traps arm stops the
    // arming, and kive exits cleanly
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)) {
        tracing::error!("installing the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let (rt, report) = match Runtime::start_until(&cfg, &compiled.traps, Arc::clone(&stop)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if stop.load(Ordering::Relaxed) {
        tracing::info!(
            "kive stopped while arming: armed={} not armed={}",
            report.armed,
            report.not_armed
        );
        return ExitCode::SUCCESS;
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    for f in &report.failures {
        tracing::error!("{f} (kept pending, retried)");
    }
    if cluster.is_none() {
        for t in &report.needs_cluster {
            tracing::warn!(
                "{t}: targets pods: needs a cluster (--kubeconfig or --in-cluster), not armed here"
            );
        }
    }
    let _cluster = match cluster {
        None => None,
        Some(kubeconfig) => {
            let cfg = ClusterConfig {
                kubeconfig,
                node_name: cfg.node_name.clone(),
                resync: Duration::from_millis(rescan_ms.max(10)),
                scope: ScopeConfig {
                    callback_destinations: cfg.callbacks.as_ref().map(|c| c.destinations.clone()),
                    ..scope_config(cluster_wide_namespaces, allow_cluster_host_traps)
                },
            };
            match ClusterSource::start(cfg, rt.pod_controller()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("{e}: {}", error_chain(&e));
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    tracing::info!(
        "kive running: tier={} armed={} pending={} rejected={}",
        rt.tier(),
        report.armed,
        report.failures.len(),
        compiled.errors.len()
    );
    let mut stdout = std::io::stdout().lock();
    'events: while !stop.load(Ordering::Relaxed) {
        // lost hits are printed as a loss report line too
        let mut alerts: Vec<_> = rt.loss_report().into_iter().collect();
        if let Some(ev) = rt.next_event(Duration::from_millis(100)) {
            alerts.extend(
                rt.alerts_for(&ev)
                    .into_iter()
                    .filter(|a| a.metadata.callback.is_empty() || print_callback_alerts),
            );
        }
        for alert in alerts {
            let line = match format {
                Format::Json => alert.to_json(),
                Format::Text => to_text(&alert),
            };
            match print_line(&mut stdout, &line) {
                Ok(()) => {}
                // `kive run | head`: the reader is gone, stop like Ctrl-C
                Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                    tracing::info!("stdout closed: stopping");
                    break 'events;
                }
                Err(e) => {
                    tracing::error!("writing an alert to stdout: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let m = rt.metrics();
    tracing::info!(
        "kive stopped: kernel hits={} ring drops={} queue drops={} rearms={} callbacks delivered={} failed={} dropped={}",
        m.kernel.hits,
        m.kernel.drops,
        m.queue_drops,
        m.rearms,
        m.callbacks.delivered,
        m.callbacks.failed,
        m.callbacks.dropped
    );
    ExitCode::SUCCESS
}

/// stderr for log lines: each line is written whole, with every control
/// character in it escaped (a path or process name holding a newline
/// cannot add a forged line), then its newline.
struct EscapedStderr;

impl std::io::Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, nl) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (&*text, ""),
        };
        let line = format!("{}{nl}", kive::alert::text::escape(body));
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Writes one line to stdout (flushed: a reader sees each alert as it
/// happens); a closed pipe is an error the caller handles, not a panic.
fn print_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// Prints lines, ending quietly when stdout is closed (`kive check | head`).
fn print_all<'a>(lines: impl IntoIterator<Item = &'a str>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        match print_line(&mut out, l) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

fn scope_config(namespaces: Vec<String>, allow_host_traps: bool) -> ScopeConfig {
    let mut scope = ScopeConfig {
        allow_host_traps,
        ..ScopeConfig::default()
    };
    if !namespaces.is_empty() {
        scope.cluster_wide_namespaces = namespaces;
    }
    scope
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

fn check(policies: &[PathBuf]) -> ExitCode {
    let compiled = load(policies);
    let mut lines = Vec::new();
    for t in &compiled.traps {
        let host = if t.target.node_labels.is_empty() {
            "host".to_string()
        } else {
            let labels: Vec<String> = t
                .target
                .node_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("host (nodes labelled {})", labels.join(","))
        };
        let target = match (t.target.host, t.target.pods.len()) {
            (true, 0) => host,
            (true, n) => format!("{host} and {n} pod selector(s)"),
            (false, 0) => "nothing (empty matchAny)".to_string(),
            (false, n) => format!("{n} pod selector(s)"),
        };
        lines.push(format!("ok    {}: {target}; {}", t.origin, t.enforcement()));
        for w in &t.warnings {
            lines.push(format!("warn  {w}"));
        }
    }
    for w in &compiled.warnings {
        lines.push(format!("warn  {w}"));
    }
    for e in &compiled.errors {
        lines.push(format!("error {e}"));
    }
    if let Err(e) = print_all(lines.iter().map(String::as_str)) {
        tracing::error!("writing to stdout: {e}");
        return ExitCode::FAILURE;
    }
    if compiled.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(|| EscapedStderr)
        // no colours: every escape character in a log line is escaped
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Crd => match print_all(kive::k8s::crd::crd_yaml().lines()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("writing to stdout: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { policies } => check(&policies),
    }
}
