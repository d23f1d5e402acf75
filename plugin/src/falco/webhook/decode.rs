//! A POSTed body → a kive event payload (pure): one KiveAlert v1 JSON
//! object (kivebpf's keys; kive's additive keys allowed), with the JSON
//! path of what is wrong when it is not one.

use super::WebhookError;
use crate::alert::{KiveAlert, ALERT_VERSION};
use crate::falco::payload::encode;

/// Parses `body` as one KiveAlert and encodes it into `out`; returns the
/// alert's wall-clock timestamp in ns (0 when it has none: Falco stamps it).
pub fn decode_body(body: &[u8], out: &mut Vec<u8>) -> Result<u64, WebhookError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let alert: KiveAlert =
        serde_path_to_error::deserialize(&mut de).map_err(|e| WebhookError::NotAnAlert {
            path: e.path().to_string(),
            source: e.into_inner(),
        })?;
    de.end().map_err(|source| WebhookError::NotAnAlert {
        path: ".".into(),
        source,
    })?;
    if alert.alert_version != ALERT_VERSION {
        return Err(WebhookError::Version(alert.alert_version));
    }
    encode(&alert, out).map_err(|e| WebhookError::Encode(Box::new(e)))?;
    Ok(alert.timestamp_ns())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::falco::payload::decode_alert;

    fn sample() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test_files/seed_sample_alert.json"
        ))
        .expect("sample present")
    }

    #[test]
    fn a_kivebpf_alert_becomes_the_payload_of_the_same_alert() {
        let body = sample();
        let mut out = Vec::new();
        let ts = decode_body(body.as_bytes(), &mut out).expect("decodes");
        let want: KiveAlert = serde_json::from_str(&body).expect("json");
        assert_eq!(ts, want.timestamp_ns());
        assert_eq!(decode_alert(&out).expect("payload"), want);
    }

    #[test]
    fn what_is_not_an_alert_names_the_field() {
        let mut out = Vec::new();
        for (body, want) in [
            ("{}", "missing field `kive-alert-version`"),
            ("[1]", "invalid type"),
            ("", "EOF"),
            (
                r#"{"kive-alert-version":"v2","kive-policy-name":"p","timestamp":"","metadata":{"path":"/a","inode":1,"mask":4,"kernel-id":"k"}}"#,
                "kive-alert-version \"v2\"",
            ),
        ] {
            let e = decode_body(body.as_bytes(), &mut out)
                .expect_err(body)
                .to_string();
            assert!(e.contains(want), "{body:?}: {e}");
        }
        let two = format!("{} {{}}", sample());
        let e = decode_body(two.as_bytes(), &mut out).expect_err("two documents");
        assert!(e.to_string().contains("trailing characters"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&sample()).expect("json");
        v["metadata"]["kernel-id"] = serde_json::json!(7);
        let e = decode_body(v.to_string().as_bytes(), &mut out)
            .expect_err("number id")
            .to_string();
        assert!(e.contains("metadata.kernel-id"), "{e}");
    }
}
