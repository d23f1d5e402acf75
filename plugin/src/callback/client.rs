//! The HTTP client every endpoint shares: TLS with the system's roots
//! (plus the configured CA bundle), no redirect, no proxy, and a resolver
//! that keeps only the addresses the destination rules allow.

use std::path::PathBuf;
use std::sync::Arc;

use super::{CallbackConfig, CallbackError, Destinations, Refusal};

/// The client for `cfg`, connecting only where `destinations` allow.
pub(super) fn build(
    cfg: &CallbackConfig,
    destinations: &Arc<Destinations>,
) -> Result<reqwest::Client, CallbackError> {
    let tls = tls_config(cfg.ca_bundle.as_ref())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // a redirect would lead the node anywhere; a proxy would hide
        // the address really connected to
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver {
            destinations: Arc::clone(destinations),
        })
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .user_agent(concat!("kive/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CallbackError::Client(e.to_string()))
}

/// Resolves host names and keeps only the addresses the destination rules
/// allow: the check is on what is connected to, not on the name.
struct GuardedResolver {
    destinations: Arc<Destinations>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = Arc::clone(&self.destinations);
        let host = name.as_str().to_string();
        Box::pin(async move {
            destinations.check_name(&host)?;
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = destinations.filter_resolved(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The destination refusal somewhere in an error's chain.
pub(super) fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

fn tls_config(ca_bundle: Option<&PathBuf>) -> Result<rustls::ClientConfig, CallbackError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|source| CallbackError::CaBundle {
            path: path.clone(),
            source,
        })?;
        use rustls::pki_types::pem::PemObject;
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| CallbackError::Client(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| CallbackError::Client(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(CallbackError::Client(format!(
                "{}: no PEM certificate in the CA bundle",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CallbackError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
