//! Alerts: the KiveAlert v1 JSON and the text line (pure).

pub mod flags;
pub mod kive_alert;
pub mod text;

pub use flags::ProcessFlags;
pub use kive_alert::{
    access_names, rfc3339_nanos, AccessorMetadata, AlertMetadata, ContainerMetadata, KiveAlert,
    LossMetadata, NodeMetadata, PodMetadata, ProcessMetadata, TamperMetadata, WorkloadMetadata,
    ALERT_VERSION,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_sample() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test_files/seed_sample_alert.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).expect("sample present")).expect("json")
    }

    /// Every key of `want` is in `got` with the same value (objects recursively).
    fn assert_contains(want: &serde_json::Value, got: &serde_json::Value, at: &str) {
        match (want, got) {
            (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
                for (k, v) in w {
                    let gv = g
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}.{k} missing in {got}"));
                    assert_contains(v, gv, &format!("{at}.{k}"));
                }
            }
            _ => assert_eq!(want, got, "at {at}"),
        }
    }

    #[test]
    fn the_seed_sample_round_trips_key_by_key() {
        let sample = seed_sample();
        let alert: KiveAlert = serde_json::from_value(sample.clone()).expect("sample decodes");
        assert_eq!(
            alert.metadata.kernel_id,
            "2c147a95-23e5-4f99-a2de-67d5e9fdb502"
        );
        let out: serde_json::Value = serde_json::from_str(&alert.to_json()).expect("json");
        assert_contains(&sample, &out, "");
        // kivebpf's Go structs have no omitempty: these keys are always there
        for key in ["callback", "kernel-id"] {
            assert!(out["metadata"].get(key).is_some(), "metadata.{key}");
        }
        assert!(out["pod"].get("ip").is_some());
        assert!(out["process"].get("arguments").is_some());
        assert!(out.get("custom-metadata").is_some());
    }

    #[test]
    fn timestamps_have_nanoseconds_and_parse_back() {
        let ns = 1_754_153_479_123_456_789;
        let s = rfc3339_nanos(ns);
        assert_eq!(s, "2025-08-02T16:51:19.123456789Z");
        let a = KiveAlert {
            timestamp: s,
            ..Default::default()
        };
        assert_eq!(a.timestamp_ns(), ns);
    }

    #[test]
    fn access_names_of_masks() {
        assert_eq!(access_names(36), ["read"]);
        assert_eq!(access_names(34), ["write"]);
        assert_eq!(access_names(38), ["read", "write"]);
        assert_eq!(access_names(33), ["exec"]);
        assert_eq!(access_names(32 | 2 | 8), ["write", "append"]);
        assert_eq!(access_names(32), ["open"]);
    }

    #[test]
    fn text_line_names_policy_path_access_and_process() {
        let mut a: KiveAlert = serde_json::from_value(seed_sample()).expect("sample");
        a.process.comm = "cat".into();
        let t = text::to_text(&a);
        for part in [
            "policy=kive-sample-policy",
            "path=/secret.txt",
            "access=read",
            "pid=176928",
            "pod=default/nginx-pod",
        ] {
            assert!(t.contains(part), "{t} lacks {part}");
        }
    }
}
