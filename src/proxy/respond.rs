//! Responses rproxy writes itself (errors, redirects) and the one mapping from failures to
//! status codes. Bodies are short and name no internals; the log says why.

use bytes::Bytes;
use http::StatusCode;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes a short plain-text response with `status` and any `extra` headers.
pub async fn send(
    session: &mut Session,
    status: u16,
    extra: &[(&str, &str)],
) -> pingora_error::Result<()> {
    let body = Bytes::from(error_text(status));
    send_body(session, status, "text/plain; charset=utf-8", body, extra).await
}

/// The reason phrase of `status`, or `""`.
pub fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// The body of a response rproxy makes itself: `404 Not Found` and a newline.
pub fn error_text(status: u16) -> String {
    format!("{status} {}\n", reason(status))
}

/// Writes a whole response with `body`.
pub async fn send_body(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3 + extra.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in extra {
        resp.insert_header(name.to_string(), *value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The status a client gets for a failed proxy attempt; 0 when the client is already gone.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadTimedout, ErrorSource::Downstream) => 408,
        (InvalidHTTPHeader | H2Error | InvalidH2, ErrorSource::Downstream) => 400,
        (WriteError | ReadError | ConnectionClosed | WriteTimedout, ErrorSource::Downstream) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// An error that makes the client get `status`.
pub fn http_error(status: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), why)
}
