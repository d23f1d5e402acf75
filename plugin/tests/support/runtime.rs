//! A runtime for the kernel tests: a config whose rescans the test drives,
//! policies of host traps, and a start that asserts every trap armed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kive::policy::{load_str, CompiledTrap};
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::{EngineConfig, TierChoice};

/// On `tier`, node `test-node`, rescans only when the test asks
/// (`rescan_now`).
pub fn config(tier: TierChoice) -> RuntimeConfig {
    RuntimeConfig {
        rescan: Duration::from_secs(3600),
        node_name: "test-node".into(),
        engine: EngineConfig {
            tier,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    }
}

/// KivePolicy `name` (namespace `test`) of host traps: one per path, each
/// with its extra YAML lines (e.g. `"    create: true\n"`).
pub fn host_policy(name: &str, traps: &[(&Path, &str)]) -> String {
    let mut text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  traps:\n"
    );
    for (path, extra) in traps {
        text.push_str(&format!(
            "  - path: {}\n    matchAny: [{{host: true}}]\n{extra}",
            path.display()
        ));
    }
    text
}

/// The compiled traps of [`host_policy`] (it must compile cleanly).
pub fn host_traps(name: &str, traps: &[(&Path, &str)]) -> Vec<Arc<CompiledTrap>> {
    let c = load_str("test", &host_policy(name, traps));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    c.traps
}

/// Starts the runtime; every trap must arm.
pub fn start(cfg: &RuntimeConfig, traps: &[Arc<CompiledTrap>]) -> Runtime {
    super::ensure_mounts();
    let (rt, report) = Runtime::start(cfg, traps).unwrap_or_else(|e| panic!("runtime: {e}"));
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    rt
}

/// A runtime of node `node` with no host traps (pod traps come from a
/// cluster source), on the tracepoint tier.
pub fn node_runtime(node: &str) -> Runtime {
    let cfg = RuntimeConfig {
        node_name: node.into(),
        ..config(TierChoice::Tracepoint)
    };
    start(&cfg, &[])
}
