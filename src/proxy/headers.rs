//! The heads pingora's path sends, built by the shared rules (`crate::request::headers`): the
//! request an upstream gets (for pingora's upstream writer, or as bytes for a WebSocket
//! handshake) and the response a client gets.

use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::respond::http_error;
use crate::request::compress::{self, Verdict};
use crate::request::headers::{self, forward_request, ClientAddr, Forwarding, Upgrade};
use crate::request::Listener;
use crate::routing::Route;

/// What the forwarded request says about its client.
pub struct Client<'a> {
    pub addr: Option<ClientAddr>,
    pub listener: Listener,
    pub request_id: &'a [u8],
}

fn forwarding<'a>(
    req: &'a RequestHeader,
    client: &Client<'a>,
    upgrade: Upgrade<'a>,
) -> Forwarding<'a> {
    Forwarding {
        client: client.addr,
        proto: client.listener.proto(),
        host: headers::request_host(req).as_bytes(),
        request_id: client.request_id,
        content_length: headers::content_length(&req.headers).ok().flatten(),
        upgrade,
    }
}

/// The path and query the upstream gets (`strip_prefix` applied).
fn target<'a>(req: &'a RequestHeader, route: &Route) -> std::borrow::Cow<'a, str> {
    route.upstream_path(req.uri.path_and_query().map_or("/", |p| p.as_str()))
}

/// The request for pingora's upstream writer, rebuilt from the client's `req`. (A body without
/// a declared length is framed chunked by pingora.)
pub fn upstream_request(
    req: &RequestHeader,
    client: &Client,
    route: &Route,
) -> Result<RequestHeader> {
    let target = target(req, route);
    let mut out = RequestHeader::build_no_case(
        req.method.clone(),
        target.as_bytes(),
        Some(req.headers.len() + 8),
    )
    .map_err(|_| http_error(400, "bad path after strip_prefix"))?;
    forward_request(
        &req.headers,
        &forwarding(req, client, Upgrade::No),
        route,
        &mut out,
    );
    Ok(out)
}

/// A WebSocket handshake as the upstream gets it, in HTTP/1.1 bytes: the client's own
/// (`Upgrade::Client`), or a `GET` made from an HTTP/2 extended CONNECT (`Upgrade::FromH2`).
pub fn handshake<'a>(
    req: &'a RequestHeader,
    client: &Client<'a>,
    route: &Route,
    upgrade: Upgrade<'a>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let method = match upgrade {
        Upgrade::FromH2 { .. } => "GET",
        _ => req.method.as_str(),
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target(req, route).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    forward_request(
        &req.headers,
        &forwarding(req, client, upgrade),
        route,
        &mut out,
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// The response for the client, rebuilt from the upstream's `resp` (compressed or varying as
/// `verdict` says).
pub fn client_response(
    resp: &ResponseHeader,
    added: &headers::Added,
    verdict: Verdict,
) -> Result<ResponseHeader> {
    let mut out = ResponseHeader::build_no_case(resp.status, Some(resp.headers.len() + 3))?;
    out.set_version(resp.version);
    let chunked = resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    let length = headers::content_length(&resp.headers)
        .ok()
        .flatten()
        .filter(|_| !chunked);
    compress::forward_response(&resp.headers, length, added, verdict, &mut out);
    Ok(out)
}
