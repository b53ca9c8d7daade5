//! The ClientHello of every https connection is read here before pingora's handshake, within
//! `server.header_timeout` (a client that never finishes it is dropped), and put back. For
//! TLS-ALPN-01 (RFC 8737), which pingora's ALPN setting cannot offer beside h2, a validation
//! handshake (`acme-tls/1`) is answered here with the challenge certificate and then closed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_error::{Error, ErrorType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use tokio::io::AsyncReadExt;

use super::store::Store;
use super::Challenge;
use crate::state::State;

const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const PEEK_LIMIT: usize = 16 << 10;
const PEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `domain` carrying the `acmeIdentifier` extension; cert + key PEM.
pub fn challenge_cert(domain: &str, digest: &[u8]) -> std::io::Result<String> {
    let fail = |e: rcgen::Error| std::io::Error::other(e.to_string());
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// The pre-TLS hook of the https listener.
pub struct AlpnResponder {
    pub state: Arc<State>,
}

#[async_trait]
impl PreTlsProcess for AlpnResponder {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        let rt = self.state.runtime();
        let deadline = rt.settings.header_timeout;
        let hello = tokio::time::timeout(deadline, read_hello(stream)).await;
        let Ok((seen, hello)) = hello else {
            return Error::e_explain(
                ErrorType::ReadTimedout,
                "no complete TLS ClientHello in time",
            );
        };
        stream.rewind(&seen);
        let alpn_challenge = rt
            .acme
            .as_ref()
            .filter(|a| a.challenge == Challenge::TlsAlpn01);
        let (
            Some(acme),
            Some(Hello {
                acme_sni: Some(domain),
            }),
        ) = (alpn_challenge, hello)
        else {
            return Ok(());
        };
        answer(stream, &Store::new(acme.dir.clone()), &domain).await;
        Error::e_explain(
            ErrorType::ConnectionClosed,
            "answered an ACME TLS-ALPN-01 validation",
        )
    }
}

/// What the ClientHello asked for.
struct Hello {
    /// The SNI of an `acme-tls/1` hello.
    acme_sni: Option<String>,
}

/// Reads until a whole ClientHello is in; returns the bytes read and the hello (`None` when the
/// bytes are not a TLS hello or the client closed: pingora's handshake reports that).
async fn read_hello(stream: &mut L4Stream) -> (Vec<u8>, Option<Hello>) {
    let mut seen = Vec::new();
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    while seen.len() < PEEK_LIMIT {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        if acceptor.read_tls(&mut &buf[..n]).is_err() {
            break;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let acme = hello
                    .alpn()
                    .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
                let acme_sni = acme
                    .then(|| hello.server_name().map(str::to_string))
                    .flatten();
                return (seen, Some(Hello { acme_sni }));
            }
            Ok(None) => continue,
            Err(_) => break,
        }
    }
    (seen, None)
}

/// Completes the validation handshake with the challenge certificate, if there is one.
async fn answer(stream: &mut L4Stream, store: &Store, domain: &str) {
    let Ok(pem) = std::fs::read(store.alpn_path(domain)) else {
        tracing::warn!(
            domain,
            "TLS-ALPN-01 validation for a name with no pending challenge"
        );
        return;
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .flatten()
        .collect();
    let Ok(Some(key)) = rustls_pemfile::private_key(&mut pem.as_slice()) else {
        tracing::warn!(domain, "the TLS-ALPN-01 challenge file has no key");
        return;
    };
    let config = match challenge_config(certs, key) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                domain,
                "cannot use the TLS-ALPN-01 challenge certificate: {e}"
            );
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    match tokio::time::timeout(PEEK_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(_)) => tracing::info!(domain, "answered a TLS-ALPN-01 validation"),
        Ok(Err(e)) => tracing::warn!(domain, "TLS-ALPN-01 validation handshake failed: {e}"),
        Err(_) => tracing::warn!(domain, "TLS-ALPN-01 validation handshake timed out"),
    }
}

fn challenge_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Not `with_single_cert`: its key check parses the certificate with webpki, which rejects
    // the critical acmeIdentifier extension (UnsupportedCriticalExtension).
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing_key);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}
