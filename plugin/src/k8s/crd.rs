//! The KivePolicy CRD, generated from the Rust types: served as `v1`
//! (storage) and `v2alpha1` (identical schema, as kivebpf serves it).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::crd::merge_crds;
use kube::CustomResourceExt;

use crate::policy::KivePolicyResource;

/// The CRD object.
pub fn crd() -> CustomResourceDefinition {
    let v1 = KivePolicyResource::crd();
    let mut v2alpha1 = v1.clone();
    for v in &mut v2alpha1.spec.versions {
        v.name = "v2alpha1".to_string();
    }
    merge_crds(vec![v1, v2alpha1], "v1").expect("two versions of one kind merge")
}

/// The CRD as YAML, as committed in `deploy/crd.yaml`.
pub fn crd_yaml() -> String {
    format!(
        "# Generated from plugin/src/policy/model.rs by `kive crd`; do not edit.\n---\n{}",
        serde_yaml::to_string(&crd()).expect("a CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crd_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "deploy/crd.yaml differs from the Rust types: regenerate it with `cargo run --bin kive -- crd > deploy/crd.yaml`"
        );
    }

    #[test]
    fn served_as_v1_and_v2alpha1_with_v1_stored() {
        let c = crd();
        assert_eq!(c.spec.group, "kivebpf.san7o.github.io");
        assert_eq!(c.spec.names.kind, "KivePolicy");
        assert_eq!(c.spec.names.plural, "kivepolicies");
        assert_eq!(c.spec.scope, "Namespaced");
        let v: Vec<(&str, bool, bool)> = c
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(v, [("v1", true, true), ("v2alpha1", true, false)]);
        let schema = serde_json::to_value(&c.spec.versions[0].schema).expect("schema");
        let trap = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["traps"]["items"]
            ["properties"];
        for field in [
            "path", "create", "mode", "callback", "metadata", "matchAny", "action",
        ] {
            assert!(
                trap.get(field).is_some(),
                "trap field {field} in the schema: {trap}"
            );
        }
        let entry = &trap["matchAny"]["items"]["properties"];
        for field in [
            "pod",
            "containerName",
            "namespace",
            "ip",
            "matchLabels",
            "host",
        ] {
            assert!(
                entry.get(field).is_some(),
                "matchAny field {field}: {entry}"
            );
        }
    }
}
