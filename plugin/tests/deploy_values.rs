//! deploy/helm's values files for the falcosecurity/falco chart, checked
//! without a cluster or Falco (`make test-falco` loads their `falco:`
//! sections in the real Falco): they parse; kive's init_config in each is
//! accepted by the plugin's own parser; the plugin, its rules files and the
//! falcoctl refs name what `make package` ships at this crate's version; the
//! service account is the one deploy/rbac.yaml binds, and rbac.yaml parses.

use serde_yaml::Value as Yaml;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn yaml(path: &str) -> Yaml {
    let text =
        std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn strings(v: &Yaml, what: &str) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: {s:?}"))
                .to_string()
        })
        .collect()
}

/// The kive entry of a `falco:` section's plugins, its init_config parsed by
/// the plugin.
fn kive_config(falco: &Yaml, file: &str) -> kive::falco::KiveConfig {
    let plugins = falco["plugins"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: falco.plugins"));
    let kive = plugins
        .iter()
        .find(|p| p["name"].as_str() == Some("kive"))
        .unwrap_or_else(|| panic!("{file}: no kive in falco.plugins"));
    assert_eq!(
        kive["library_path"].as_str(),
        Some("libkive.so"),
        "{file}: the plugin tarball's file, in Falco's plugin directory"
    );
    let init = serde_json::to_string(&kive["init_config"]).expect("json");
    kive::falco::KiveConfig::from_json(&init)
        .unwrap_or_else(|e| panic!("{file}: kive refuses its init_config: {e}"))
}

#[test]
fn helm_values_configure_kive_with_what_make_package_ships() {
    let base = yaml("deploy/helm/values-kive.yaml");
    let driver = yaml("deploy/helm/values-kive-driver.yaml");

    // driver off: kive's source only, no async events
    assert_eq!(base["driver"]["enabled"].as_bool(), Some(false));
    let cfg = kive_config(&base["falco"], "values-kive.yaml");
    assert!(!cfg.async_events, "no syscall source with the driver off");
    // driver on: the modern eBPF driver and async events
    assert_eq!(driver["driver"]["enabled"].as_bool(), Some(true));
    assert_eq!(driver["driver"]["kind"].as_str(), Some("modern_ebpf"));
    let cfg = kive_config(&driver["falco"], "values-kive-driver.yaml");
    assert!(cfg.async_events, "the driver variant injects async events");

    for (v, file) in [
        (&base, "values-kive.yaml"),
        (&driver, "values-kive-driver.yaml"),
    ] {
        let falco = &v["falco"];
        assert!(
            strings(&falco["load_plugins"], "load_plugins").contains(&"kive".to_string()),
            "{file}: load_plugins"
        );
        // every rules file named is one the rules artifact holds
        for r in strings(&falco["rules_files"], "rules_files") {
            let name = r.strip_prefix("/etc/falco/").unwrap_or(&r);
            if name == "rules.d" {
                continue;
            }
            assert!(
                std::path::Path::new(&format!("{ROOT}/rules/{name}")).is_file(),
                "{file}: rules file {r} is not in rules/ (the rules artifact)"
            );
        }
    }

    // falcoctl installs this version's plugin and rules
    let refs = strings(
        &base["falcoctl"]["config"]["artifact"]["install"]["refs"],
        "falcoctl install refs",
    );
    for artifact in ["kive", "kive-rules"] {
        let want = format!("/{artifact}:{VERSION}");
        assert!(
            refs.iter().any(|r| r.ends_with(&want)),
            "no {artifact}:{VERSION} in falcoctl's refs {refs:?}"
        );
    }
    let types = strings(
        &base["falcoctl"]["config"]["artifact"]["allowedTypes"],
        "allowedTypes",
    );
    assert!(types.contains(&"plugin".into()) && types.contains(&"rulesfile".into()));

    // the chart's service account is the subject of deploy/rbac.yaml's binding
    let sa = base["serviceAccount"]["name"]
        .as_str()
        .expect("serviceAccount.name");
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/rbac.yaml")).expect("rbac.yaml");
    let docs: Vec<Yaml> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("rbac.yaml document is YAML"))
        .collect();
    assert!(docs
        .iter()
        .all(|d| d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some()));
    let role = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ClusterRole"))
        .expect("a ClusterRole");
    assert!(
        role["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .any(|r| strings(&r["resources"], "resources").contains(&"kivepolicies".into())),
        "the ClusterRole reads kivepolicies"
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ClusterRoleBinding"))
        .expect("a ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert!(
        binding["subjects"]
            .as_sequence()
            .expect("subjects")
            .iter()
            .any(|s| s["kind"].as_str() == Some("ServiceAccount") && s["name"].as_str() == Some(sa)),
        "deploy/rbac.yaml binds no service account named {sa}"
    );
}
