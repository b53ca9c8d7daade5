//! TLS termination: the certificate store picked by SNI (`certs.rs`) and the rustls settings
//! of the https listener.

pub mod certs;

use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;

pub use certs::{CertResolver, CertStore, InlineCert};

/// Listener settings: TLS 1.2 and 1.3, ALPN h2 then http/1.1, certificates from `resolver`.
pub fn listener_settings(resolver: Arc<CertResolver>) -> pingora_error::Result<TlsSettings> {
    // With a resolver set, the paths given here are never read.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    Ok(settings)
}
