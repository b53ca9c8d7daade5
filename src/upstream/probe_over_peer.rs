//! Health probes of pools spoken to over TLS or HTTP/2 (`protocol`, `tls`): made through
//! pingora's connector with the pool's own peer (`upstream::peer`), so a probe goes the way a
//! request goes (same protocol, certificate checks and client certificate). A probe is
//! `GET <health.path>`, or with `health.grpc` gRPC's `grpc.health.v1.Health/Check` for the
//! whole server, where SERVING passes (as status 200) and anything else fails (as 503).

use std::sync::OnceLock;

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

/// The gRPC method of the standard health service.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// A gRPC message frame holding an empty `HealthCheckRequest` (the whole server).
const EMPTY_REQUEST: [u8; 5] = [0, 0, 0, 0, 0];
/// A gRPC message frame holding `HealthCheckResponse { status: SERVING }`.
const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];

/// The probes' connector (each probe's connection is closed after it, never pooled).
static CONNECTOR: OnceLock<Connector> = OnceLock::new();

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    Get(&'a str),
    GrpcHealth,
}

/// One probe of the server `peer` leads to; the status it counts as.
pub async fn probe(peer: &HttpPeer, host: &str, ask: Ask<'_>) -> Result<u16, String> {
    let connector = CONNECTOR.get_or_init(|| Connector::new(None));
    let (mut session, _) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let h2 = session.as_http2().is_some();
    let head = request(ask, host, peer.is_tls(), h2)?;
    session
        .write_request_header(Box::new(head))
        .await
        .map_err(|e| format!("write: {e}"))?;
    if ask == Ask::GrpcHealth {
        session
            .write_request_body(Bytes::from_static(&EMPTY_REQUEST), true)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| format!("write: {e}"))?;
    session
        .read_response_header()
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = session
        .response_header()
        .map(|h| h.status.as_u16())
        .ok_or("no response head")?;
    let result = match ask {
        Ask::Get(_) => Ok(status),
        Ask::GrpcHealth => grpc_verdict(&mut session, status).await,
    };
    session.shutdown().await;
    result
}

fn request(ask: Ask<'_>, host: &str, tls: bool, h2: bool) -> Result<RequestHeader, String> {
    let (method, path) = match ask {
        Ask::Get(path) => ("GET", path),
        Ask::GrpcHealth => ("POST", GRPC_HEALTH_CHECK),
    };
    let mut head = RequestHeader::build(method, path.as_bytes(), Some(4))
        .map_err(|e| format!("probe request: {e}"))?;
    let set = |head: &mut RequestHeader, k: &'static str, v: &str| {
        head.insert_header(k, v)
            .map_err(|e| format!("probe request: {e}"))
    };
    if h2 {
        head.set_version(http::Version::HTTP_2);
        // The authority goes in the URI (pingora's `:authority`), or pingora would make it of
        // a `host` header and send both.
        let scheme = if tls { "https" } else { "http" };
        let uri = http::Uri::try_from(format!("{scheme}://{host}{path}"))
            .map_err(|e| format!("probe request: {e}"))?;
        head.set_uri(uri);
    }
    // Over HTTP/2 the URI's authority is `:authority`; a `host` beside it is a duplicate that
    // nginx refuses with 400 ("client sent duplicate host header").
    if !h2 {
        set(&mut head, "host", host)?;
    }
    set(&mut head, "user-agent", "rproxy-health-check")?;
    if ask == Ask::GrpcHealth {
        set(&mut head, "content-type", "application/grpc")?;
        set(&mut head, "te", "trailers")?;
    }
    Ok(head)
}

/// SERVING in the body with `grpc-status: 0` passes (200); anything else fails (503).
async fn grpc_verdict(session: &mut HttpSession, status: u16) -> Result<u16, String> {
    if status != 200 {
        return Ok(status);
    }
    let mut body = Vec::new();
    while let Some(data) = session
        .read_response_body()
        .await
        .map_err(|e| format!("read: {e}"))?
    {
        body.extend_from_slice(&data);
        if body.len() > 1024 {
            return Err("gRPC health answer too long".into());
        }
    }
    if body == SERVING {
        Ok(200)
    } else {
        Err(format!("gRPC health: not SERVING ({body:02x?})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_goes_once_as_host_or_authority() {
        let h1 = request(Ask::Get("/health"), "app:8000", false, false).expect("h1 probe");
        assert_eq!(
            h1.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"app:8000"[..])
        );
        assert_eq!(h1.uri.authority(), None);
        let h2 = request(Ask::Get("/health"), "app:8000", true, true).expect("h2 probe");
        assert_eq!(h2.headers.get("host"), None, "host beside :authority");
        assert_eq!(h2.uri.authority().map(|a| a.as_str()), Some("app:8000"));
        assert_eq!(h2.uri.scheme_str(), Some("https"));
        assert_eq!(h2.uri.path(), "/health");
    }
}
