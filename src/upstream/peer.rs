//! How rproxy reaches a pool's servers: the protocol (HTTP/1.1, h2c, h2 over TLS, or ALPN's
//! choice), TLS (SNI, verification against the system's roots or a `ca:` file, a client
//! certificate) and the timeouts, made into the pingora `HttpPeer` of one server. One place
//! for the proxy and the health probes. The TLS material is read and checked once, when the
//! configuration is loaded (`ClientTls::load`): a bad file is a config problem, never a panic.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::protocols::tls::CaType;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Backend, PeerSettings};
use crate::config::model::{UpstreamProtocol, UpstreamTlsOptions};

/// How often an idle HTTP/2 upstream connection is pinged, so a dead one is noticed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// The most of one response an HTTP/2 upstream may send before rproxy has passed it on: what a
/// client that stops reading holds up. 1 MiB keeps one stream at ~50 MB/s over a 20 ms round
/// trip.
const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The most HTTP/2 flow control allows (RFC 9113, 6.9.1).
const H2_MAX_WINDOW: u64 = (1 << 31) - 1;

/// How long a request waits for another request's new HTTP/2 connection to a server before it
/// opens its own (a server that does not answer must not hold a queue behind one connect).
const STREAM_TURN_WAIT: Duration = Duration::from_millis(250);

/// Takes streams of one server's HTTP/2 connections one request at a time. Pingora's
/// connector takes a connection out of its pool while it opens a stream on it, so requests
/// arriving together each find the pool empty and each open a connection of their own (eleven
/// for a burst of a hundred). Holding the turn from choosing the server until the stream is
/// open (`connected_to_upstream`) lets the next request find that connection, or the one the
/// turn's holder has just made. Waiting is bounded by `STREAM_TURN_WAIT`.
#[derive(Debug)]
pub struct StreamTurn(Arc<tokio::sync::Semaphore>);

/// The turn held by one request; dropping it passes the turn on.
pub type HeldTurn = tokio::sync::OwnedSemaphorePermit;

impl Default for StreamTurn {
    fn default() -> Self {
        StreamTurn(Arc::new(tokio::sync::Semaphore::new(1)))
    }
}

impl StreamTurn {
    /// Waits for the turn; `None` when it did not come in time (the request goes on without).
    pub async fn take(&self) -> Option<HeldTurn> {
        let turn = self.0.clone().acquire_owned();
        match tokio::time::timeout(STREAM_TURN_WAIT, turn).await {
            Ok(Ok(held)) => Some(held),
            _ => None,
        }
    }
}

/// TLS to a pool's servers, read from its `tls:` options.
pub struct ClientTls {
    /// The name sent and verified; `None`: each server's own name.
    sni: Option<String>,
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    verify: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client.is_some())
            .field("verify", &self.verify)
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA and client certificate files of `opts` (relative to `dir`); the error
    /// says which file and why.
    pub fn load(opts: &UpstreamTlsOptions, dir: &Path) -> Result<ClientTls, String> {
        let ca = match &opts.ca {
            Some(path) => Some(read_ca(&dir.join(path))?),
            None => None,
        };
        let client = match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => Some(read_cert_key(&dir.join(cert), &dir.join(key))?),
            (None, None) => None,
            _ => return Err("client_cert and client_key go together".into()),
        };
        Ok(ClientTls {
            sni: opts.sni.clone().filter(|s| !s.is_empty()),
            ca,
            client,
            verify: !opts.insecure_skip_verify,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// The certificates of a PEM file, each checked to parse (pingora panics on one that does not).
fn pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = read(path)?;
    let mut certs = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert: CertificateDer =
            cert.map_err(|e| format!("`{}`: not PEM certificates: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| format!("`{}`: a certificate does not parse: {e}", path.display()))?;
        certs.push(cert.to_vec());
    }
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

fn read_ca(path: &Path) -> Result<Arc<CaType>, String> {
    let certs = pem_certs(path)?;
    let wrapped: Vec<WrappedX509> = certs
        .into_iter()
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect();
    Ok(Arc::from(wrapped.into_boxed_slice()))
}

fn read_cert_key(cert: &Path, key: &Path) -> Result<Arc<CertKey>, String> {
    let certs = pem_certs(cert)?;
    let pem = read(key)?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| format!("`{}` holds no private key", key.display()))?;
    let bytes = der.secret_der().to_vec();
    // pingora turns the key back into rustls's form without checking: check it here.
    PrivateKeyDer::try_from(bytes.clone()).map_err(|e| format!("`{}`: {e}", key.display()))?;
    Ok(Arc::new(CertKey::new(certs, bytes)))
}

/// How a pool's servers are spoken to.
#[derive(Debug)]
pub struct Transport {
    pub protocol: UpstreamProtocol,
    pub tls: Option<ClientTls>,
    /// Most streams on one HTTP/2 connection.
    pub max_streams: usize,
    /// Keeps this pool's connections its own in pingora's connection pool, which does not tell
    /// apart peers that differ only in their CA or ALPN: a connection verified against one
    /// pool's `ca` must never serve another's.
    group: u64,
}

impl Transport {
    pub fn new(protocol: UpstreamProtocol, tls: Option<ClientTls>, max_streams: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Transport {
            protocol,
            tls,
            max_streams,
            group: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether requests share connections (HTTP/2), and so take turns at opening streams.
    pub fn multiplexes(&self) -> bool {
        self.protocol != UpstreamProtocol::Http1
    }

    /// Plain HTTP/1.1: what rproxy's own request path speaks.
    pub fn is_plain_http1(&self) -> bool {
        self.protocol == UpstreamProtocol::Http1 && self.tls.is_none()
    }

    /// The pingora peer of `server` with `settings`' timeouts.
    pub fn http_peer(&self, server: &Backend, settings: &PeerSettings) -> HttpPeer {
        let sni = match &self.tls {
            Some(tls) => tls.sni.clone().unwrap_or_else(|| server.name.clone()),
            None => String::new(),
        };
        let mut peer = HttpPeer::new(server.addr, self.tls.is_some(), sni);
        peer.group_key = self.group;
        let o = &mut peer.options;
        o.connection_timeout = Some(settings.connect_timeout);
        o.read_timeout = Some(settings.read_timeout);
        o.write_timeout = Some(settings.write_timeout);
        o.idle_timeout = Some(settings.idle_timeout);
        o.alpn = match self.protocol {
            UpstreamProtocol::Http1 => ALPN::H1,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => ALPN::H2,
            UpstreamProtocol::Auto => ALPN::H2H1,
        };
        if self.protocol != UpstreamProtocol::Http1 {
            o.max_h2_streams = self.max_streams.max(1);
            o.h2_ping_interval = Some(H2_PING_INTERVAL);
            // A connection's window holds every stream's, so a response whose client stalls
            // stops only itself (pingora's default gives both 8 MiB: one stalled download held
            // up every other stream of its connection).
            o.h2_stream_window_size = Some(H2_STREAM_WINDOW);
            let all = u64::from(H2_STREAM_WINDOW) * o.max_h2_streams as u64;
            o.h2_connection_window_size = Some(all.min(H2_MAX_WINDOW) as u32);
        }
        if let Some(tls) = &self.tls {
            o.verify_cert = tls.verify;
            o.verify_hostname = tls.verify;
            o.ca = tls.ca.clone();
            peer.client_cert_key = tls.client.clone();
        }
        peer
    }
}
