//! TLS for tests: certificates made with rcgen, rustls client configs (ring provider) that trust
//! them or trust anything, and a raw handshake that reports the certificate and ALPN protocol
//! the server chose.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

/// A self-signed certificate for some DNS names, with its key.
pub struct TestCert {
    pub names: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A fresh self-signed certificate whose SANs are `names`.
    pub fn new(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names.clone()).expect("rcgen certificate");
        TestCert {
            names,
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            der: ck.cert.der().clone(),
        }
    }

    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (PEM), creating `dir`.
    pub fn write(&self, dir: &Path, stem: &str) {
        std::fs::create_dir_all(dir).expect("create cert dir");
        std::fs::write(dir.join(format!("{stem}.crt")), &self.cert_pem).expect("write .crt");
        std::fs::write(dir.join(format!("{stem}.key")), &self.key_pem).expect("write .key");
    }

    /// The certificate for `reqwest::ClientBuilder::add_root_certificate`.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_der(self.der.as_ref()).expect("reqwest certificate")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client config trusting exactly `trust`, offering the ALPN protocols `alpn`.
pub fn client_config(trust: &[&TestCert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let roots: Vec<CertificateDer<'static>> = trust.iter().map(|c| c.der.clone()).collect();
    roots_client_config(&roots, alpn)
}

/// A rustls client config trusting exactly the root certificates `trust` (e.g. a test CA's
/// root), offering the ALPN protocols `alpn`.
pub fn roots_client_config(trust: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trust {
        roots.add(cert.clone()).expect("add root");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A rustls client config that accepts any server certificate (to look at what a server sends).
pub fn insecure_client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What a TLS handshake showed.
pub struct Handshake {
    /// The server's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

impl Handshake {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        self.chain.first().expect("server sent no certificate")
    }
}

/// Connects to `addr`, handshakes with `server_name` (a DNS name is sent as SNI; an IP address
/// sends no SNI) accepting any certificate, and returns what the server presented.
pub async fn handshake(
    addr: SocketAddr,
    server_name: &str,
    alpn: &[&[u8]],
) -> Result<Handshake, String> {
    handshake_with(insecure_client_config(alpn), addr, server_name).await
}

/// [`handshake`] with a given client config: with one that verifies (such as
/// [`roots_client_config`]), an `Err` also means the server's chain did not verify.
pub async fn handshake_with(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Handshake, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name}: {e}"))?;
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake with {server_name}: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok(Handshake {
            chain: conn
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default(),
            alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| format!("handshake with {addr} ({server_name}) timed out"))?
}

/// A reqwest client builder (no proxy, no redirects, 10 s timeout) that trusts only `trust`
/// and resolves each of `names` to `addr`, so `https://<name>:<port>/` sends that SNI.
pub fn https_client_builder(
    trust: &[&TestCert],
    names: &[&str],
    addr: SocketAddr,
) -> reqwest::ClientBuilder {
    let mut b = super::client_builder().tls_built_in_root_certs(false);
    for cert in trust {
        b = b.add_root_certificate(cert.reqwest_root());
    }
    for name in names {
        b = b.resolve(name, addr);
    }
    b
}

#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
