//! The webhook source's settings: the listen address from `open_params`
//! and the `webhook` object of `init_config` (pure parsing).

use std::net::{SocketAddr, ToSocketAddrs};

use schemars::JsonSchema;
use serde::Deserialize;

use super::WebhookError;

/// Largest request body accepted by default (1 MiB; an alert is a few KiB).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// `webhook` in the init config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct WebhookConfig {
    /// Largest request body in bytes (default 1 MiB); a larger one gets
    /// 413.
    #[schemars(range(min = 1))]
    pub max_body_bytes: u64,
    /// PEM certificate chain served for an `https://` open_params.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tlsCertFile`.
    pub tls_key_file: Option<String>,
    /// A bearer token every POST must carry (`Authorization: Bearer
    /// <token>`), else 401. Prefer `bearerTokenFile`.
    pub bearer_token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored),
    /// e.g. a mounted Kubernetes Secret.
    pub bearer_token_file: Option<String>,
    /// Alerts received and not yet taken by Falco (default 4096); when
    /// full, a POST gets 503 and is counted in `webhook_queue_full`.
    #[schemars(range(min = 1))]
    pub queue_capacity: u32,
    /// Connections served at once (default 256); more are closed at once.
    #[schemars(range(min = 1))]
    pub max_connections: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY,
            tls_cert_file: None,
            tls_key_file: None,
            bearer_token: None,
            bearer_token_file: None,
            queue_capacity: 4096,
            max_connections: 256,
        }
    }
}

impl WebhookConfig {
    /// Checks values that the schema cannot express; `Err((key, message))`
    /// with the key under `webhook.`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_body_bytes == 0 {
            return Err(("webhook.maxBodyBytes", "must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            return Err(("webhook.queueCapacity", "must be at least 1".into()));
        }
        if self.max_connections == 0 {
            return Err(("webhook.maxConnections", "must be at least 1".into()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err((
                "webhook.tlsKeyFile",
                "tlsCertFile and tlsKeyFile go together".into(),
            ));
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err((
                "webhook.bearerTokenFile",
                "set bearerToken or bearerTokenFile, not both".into(),
            ));
        }
        if self.bearer_token.as_deref() == Some("") {
            return Err(("webhook.bearerToken", "empty token".into()));
        }
        Ok(())
    }
}

/// Where the webhook listens: `http[s]://host:port/path` from open_params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `https://`.
    pub tls: bool,
    /// The address to bind (an empty host is every IPv4 interface).
    pub addr: SocketAddr,
    /// The one path served (`/` when the URL has none).
    pub path: String,
}

/// Whether open_params names a listen address rather than a file.
pub fn is_listen_url(params: &str) -> bool {
    params.starts_with("http://") || params.starts_with("https://")
}

/// Parses `http[s]://host:port[/path]` (host: a name, an address,
/// `[v6]`, or empty for every interface; the port is required).
pub fn parse_listen(url: &str) -> Result<Listen, WebhookError> {
    let bad = |message: &str| WebhookError::Listen {
        url: url.to_string(),
        message: message.to_string(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
        return Err(bad("the path may not hold a query, fragment or space"));
    }
    if authority.contains('@') {
        return Err(bad("user info is not allowed"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && h.contains(':') => {
            return Err(bad(&format!(
                "IPv6 address {h}:{p} must be written in brackets"
            )))
        }
        Some((h, p)) => (h, p),
        None => return Err(bad("a port is required (host:port)")),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad(&format!("{port:?} is not a port number")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| bad(&format!("{host} has no address")))?;
    Ok(Listen {
        tls,
        addr,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls_parse_with_scheme_address_and_path() {
        let l = parse_listen("http://127.0.0.1:9766/kive").expect("valid");
        assert!(!l.tls);
        assert_eq!(l.addr, "127.0.0.1:9766".parse().expect("addr"));
        assert_eq!(l.path, "/kive");
        let l = parse_listen("https://:8443").expect("empty host");
        assert!(l.tls);
        assert_eq!(l.addr, "0.0.0.0:8443".parse().expect("addr"));
        assert_eq!(l.path, "/");
        let l = parse_listen("http://[::1]:80/a/b").expect("v6");
        assert_eq!(l.addr, "[::1]:80".parse().expect("addr"));
        assert_eq!(l.path, "/a/b");
    }

    #[test]
    fn bad_listen_urls_say_what_is_wrong() {
        for (url, want) in [
            ("http://127.0.0.1/kive", "a port is required"),
            ("http://127.0.0.1:99999/kive", "is not a port number"),
            ("http://::1:80/", "brackets"),
            ("http://u@127.0.0.1:1/", "user info"),
            ("http://127.0.0.1:1/a?b=c", "query"),
            ("ftp://127.0.0.1:1/", "not an http"),
        ] {
            let e = parse_listen(url).expect_err(url).to_string();
            assert!(e.contains(want) && e.contains(url), "{url}: {e}");
        }
        assert!(is_listen_url("https://x:1/"));
        assert!(!is_listen_url("/var/alerts.jsonl"));
    }

    #[test]
    fn webhook_settings_are_checked() {
        assert_eq!(WebhookConfig::default().validate(), Ok(()));
        let c = WebhookConfig {
            tls_cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        assert_eq!(c.validate().expect_err("no key").0, "webhook.tlsKeyFile");
        let c = WebhookConfig {
            max_body_bytes: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().expect_err("0").0, "webhook.maxBodyBytes");
        let c = WebhookConfig {
            bearer_token: Some("a".into()),
            bearer_token_file: Some("f".into()),
            ..Default::default()
        };
        assert_eq!(c.validate().expect_err("both").0, "webhook.bearerTokenFile");
    }
}
