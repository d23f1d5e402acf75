//! Where a callback may be sent (pure): a policy author must not make the
//! node POST to its own loopback services, link-local addresses or a
//! cloud's metadata service. Checked on the URL's host and again on every
//! address a host name resolves to, at connect time (no DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

/// Host names of cloud metadata services.
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "metadata"];

/// The operator's destination settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationConfig {
    /// Allow loopback addresses (127.0.0.0/8, ::1, 0.0.0.0, ::).
    pub allow_loopback: bool,
    /// Allow link-local addresses (169.254.0.0/16, fe80::/10), metadata
    /// addresses excepted.
    pub allow_link_local: bool,
    /// Allow cloud metadata addresses and names (169.254.169.254,
    /// fd00:ec2::254, 100.100.100.200, metadata.google.internal).
    pub allow_metadata: bool,
    /// When not empty, the only destinations allowed: host names (exact,
    /// case-insensitive) or addresses / CIDRs. An entry allows what it
    /// names even when it is loopback, link-local or metadata.
    pub allowed: Vec<String>,
}

/// Why a destination is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refusal {
    /// A URL that does not parse or has no host.
    #[error("{0:?} is not a URL with a host")]
    BadUrl(String),
    /// The allowlist does not name it.
    #[error("{0} is not in the callback allowlist (callbackAllowedHosts)")]
    NotAllowed(String),
    /// A forbidden class of address or name.
    #[error("{what} {target} is refused (allow it with {setting})")]
    Forbidden {
        /// The address or name.
        target: String,
        /// `loopback`, `link-local` or `cloud metadata`.
        what: &'static str,
        /// The setting that allows it.
        setting: &'static str,
    },
    /// A host name whose every address was refused.
    #[error("{host} resolves only to refused addresses: {reasons}")]
    Resolved {
        /// The host name.
        host: String,
        /// Each address's refusal.
        reasons: String,
    },
}

/// A parsed allowlist entry.
#[derive(Debug, Clone)]
enum Allowed {
    Host(String),
    Net(IpNet),
}

/// The compiled destination rules.
#[derive(Debug, Clone)]
pub struct Destinations {
    cfg: DestinationConfig,
    allowed: Vec<Allowed>,
}

/// Allowlist entries that are neither a host name nor an address/CIDR.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("callbackAllowedHosts[{index}]: {entry:?} is not a host name, an address or a CIDR")]
pub struct BadAllowEntry {
    /// Index in the list.
    pub index: usize,
    /// The entry.
    pub entry: String,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 2] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(a) => V4.contains(&a),
        IpAddr::V6(a) => a == V6,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl Destinations {
    /// Compiles the settings; an allowlist entry that is not a host, an
    /// address or a CIDR is an error naming it.
    pub fn new(cfg: DestinationConfig) -> Result<Self, BadAllowEntry> {
        let mut allowed = Vec::new();
        for (index, entry) in cfg.allowed.iter().enumerate() {
            let e = entry.trim();
            let parsed = if let Ok(net) = e.parse::<IpNet>() {
                Allowed::Net(net)
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                Allowed::Net(IpNet::from(canonical(ip)))
            } else if !e.is_empty()
                && e.len() <= 253
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                Allowed::Host(e.trim_end_matches('.').to_ascii_lowercase())
            } else {
                return Err(BadAllowEntry {
                    index,
                    entry: entry.clone(),
                });
            };
            allowed.push(parsed);
        }
        Ok(Self { cfg, allowed })
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|a| matches!(a, Allowed::Host(h) if *h == host))
    }

    fn ip_listed(&self, ip: IpAddr) -> bool {
        self.allowed
            .iter()
            .any(|a| matches!(a, Allowed::Net(n) if n.contains(&ip)))
    }

    /// Whether a connection to `ip` (reached through `host`, when a name)
    /// is allowed.
    pub fn check_ip(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.ip_listed(ip) || host.is_some_and(|h| self.host_listed(h)) {
            return Ok(());
        }
        let forbidden = |what, setting| Refusal::Forbidden {
            target: ip.to_string(),
            what,
            setting,
        };
        if is_metadata(ip) && !self.cfg.allow_metadata {
            return Err(forbidden("cloud metadata address", "callbackAllowMetadata"));
        }
        if is_loopback(ip) && !self.cfg.allow_loopback {
            return Err(forbidden("loopback address", "callbackAllowLoopback"));
        }
        if is_link_local(ip) && !is_metadata(ip) && !self.cfg.allow_link_local {
            return Err(forbidden("link-local address", "callbackAllowLinkLocal"));
        }
        if !self.allowed.is_empty() {
            return Err(Refusal::NotAllowed(ip.to_string()));
        }
        Ok(())
    }

    /// Checks a host name before it is resolved (its addresses are checked
    /// by [`Destinations::check_ip`] once resolved).
    pub fn check_name(&self, host: &str) -> Result<(), Refusal> {
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if self.host_listed(&lower) {
            return Ok(());
        }
        if METADATA_HOSTS.contains(&lower.as_str()) && !self.cfg.allow_metadata {
            return Err(Refusal::Forbidden {
                target: host.to_string(),
                what: "cloud metadata host",
                setting: "callbackAllowMetadata",
            });
        }
        // an allowlist of addresses still lets names through to the
        // address check; one of names only does not
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| matches!(a, Allowed::Net(_))) {
            return Err(Refusal::NotAllowed(host.to_string()));
        }
        Ok(())
    }

    /// Checks a callback URL as far as it can be without resolving it: an
    /// address literal completely, a host name by name.
    pub fn check_url(&self, url: &str) -> Result<(), Refusal> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Refusal::BadUrl(url.to_string()))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Refusal::BadUrl(url.to_string()))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(None, ip),
            Err(_) => self.check_name(host),
        }
    }

    /// Keeps the resolved addresses of `host` that are allowed; an error
    /// when none is.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Result<Vec<std::net::SocketAddr>, Refusal> {
        let mut kept = Vec::new();
        let mut reasons = Vec::new();
        for a in addrs {
            match self.check_ip(Some(host), a.ip()) {
                Ok(()) => kept.push(a),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if kept.is_empty() {
            if reasons.is_empty() {
                reasons.push("no address".into());
            }
            return Err(Refusal::Resolved {
                host: host.to_string(),
                reasons: reasons.join("; "),
            });
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(cfg: DestinationConfig) -> Destinations {
        Destinations::new(cfg).expect("valid config")
    }

    #[test]
    fn forbidden_classes_are_refused_by_default() {
        let deny = d(DestinationConfig::default());
        for url in [
            "http://127.0.0.1:8080/a",
            "http://127.1.2.3/",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            let e = deny.check_url(url).expect_err(url);
            assert!(e.to_string().contains("refused"), "{url}: {e}");
        }
        for url in [
            "http://10.0.0.5/",
            "https://hooks.example.com/x",
            "http://[2001:db8::1]/",
        ] {
            assert_eq!(deny.check_url(url), Ok(()), "{url}");
        }
        assert!(matches!(
            deny.check_url("nonsense"),
            Err(Refusal::BadUrl(_))
        ));
    }

    #[test]
    fn each_class_has_its_own_setting() {
        let lo = d(DestinationConfig {
            allow_loopback: true,
            ..Default::default()
        });
        assert_eq!(lo.check_url("http://127.0.0.1/"), Ok(()));
        assert!(lo.check_url("http://169.254.1.1/").is_err());
        let ll = d(DestinationConfig {
            allow_link_local: true,
            ..Default::default()
        });
        assert_eq!(ll.check_url("http://169.254.1.1/"), Ok(()));
        let e = ll
            .check_url("http://169.254.169.254/")
            .expect_err("metadata needs its own setting");
        assert!(e.to_string().contains("callbackAllowMetadata"), "{e}");
        let md = d(DestinationConfig {
            allow_metadata: true,
            ..Default::default()
        });
        assert_eq!(md.check_url("http://169.254.169.254/"), Ok(()));
        assert_eq!(md.check_url("http://metadata.google.internal/"), Ok(()));
    }

    #[test]
    fn the_allowlist_allows_what_it_names_and_nothing_else() {
        let a = d(DestinationConfig {
            allowed: vec!["127.0.0.1/32".into(), "hooks.example.com".into()],
            ..Default::default()
        });
        assert_eq!(a.check_url("http://127.0.0.1:9/"), Ok(()));
        assert!(matches!(
            a.check_url("http://10.0.0.5/"),
            Err(Refusal::NotAllowed(_))
        ));
        assert_eq!(a.check_url("https://HOOKS.example.com/x"), Ok(()));
        // a name not listed goes on to the address check
        assert_eq!(a.check_url("http://other.example.com/"), Ok(()));
        let sock = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        assert!(a
            .filter_resolved("other.example.com", [sock("10.0.0.5:80")])
            .is_err());
        let names_only = d(DestinationConfig {
            allowed: vec!["hooks.example.com".into()],
            ..Default::default()
        });
        assert!(matches!(
            names_only.check_url("http://other.example.com/"),
            Err(Refusal::NotAllowed(_))
        ));
        let e = Destinations::new(DestinationConfig {
            allowed: vec!["ok.example".into(), "bad host/".into()],
            ..Default::default()
        })
        .expect_err("bad entry");
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("bad host/"), "{e}");
    }

    #[test]
    fn resolved_addresses_are_checked_one_by_one() {
        let deny = d(DestinationConfig::default());
        let sock = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        let e = deny
            .filter_resolved("rebind.example", [sock("127.0.0.1:80"), sock("[::1]:80")])
            .expect_err("only loopback");
        let msg = e.to_string();
        assert!(
            msg.contains("rebind.example") && msg.contains("loopback address 127.0.0.1"),
            "{msg}"
        );
        let kept = deny
            .filter_resolved("mixed.example", [sock("127.0.0.1:80"), sock("10.0.0.5:80")])
            .expect("one good address");
        assert_eq!(kept, [sock("10.0.0.5:80")]);
    }
}
