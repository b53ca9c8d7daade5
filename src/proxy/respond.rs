//! Writing the responses rproxy makes itself on pingora's path; what they say is
//! `crate::request::local`'s.

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::request::headers::Added;
use crate::request::{grpc, local};

/// Writes a short plain-text response with `status`, its own headers and `extra`.
pub async fn send(
    session: &mut Session,
    status: u16,
    extra: &[(&str, &str)],
    request_id: &str,
) -> pingora_error::Result<()> {
    let added = Added {
        request_id: request_id.as_bytes(),
        hsts: None,
        date: b"",
        set_cookie: None,
    };
    if grpc::local_answer(&session.req_header().headers, status).is_some() {
        return send_grpc(session, status, &added).await;
    }
    let body = local::text(status);
    let mut resp = ResponseHeader::build_no_case(status, Some(4 + extra.len()))?;
    local::head_lines(status, body.len(), extra, &added, &mut resp);
    write(session, resp, Bytes::from(body)).await
}

/// A gRPC call rproxy fails: its status as gRPC's, in a head that ends the response.
async fn send_grpc(
    session: &mut Session,
    status: u16,
    added: &Added<'_>,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build_no_case(200, Some(5))?;
    grpc::head_lines(status, added, &mut resp);
    // Over HTTP/2 the head itself ends the stream ("trailers-only"): pingora's own writer
    // would end it with an empty DATA frame, which gRPC clients refuse.
    if let ServerSession::H2(h2) = &mut **session {
        return h2.write_response_header(Box::new(resp), true);
    }
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await
}

/// Writes a whole response with `body`.
pub async fn send_body(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(2))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    write(session, resp, body).await
}

async fn write(
    session: &mut Session,
    resp: ResponseHeader,
    body: Bytes,
) -> pingora_error::Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// An error that makes the client get `status`.
pub fn http_error(status: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), why)
}
