//! Pingora's path's side of response compression: the decision (`crate::request::compress`)
//! made in `response_filter`, and the body pieces passed through its encoder in
//! `response_body_filter`.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{respond, Ctx};
use crate::request::compress::{self, Encoder, Verdict};

/// What `crate::request::compress` decides for the upstream's response `resp`; the encoder
/// of a compressed one goes to `ctx`.
pub(super) fn decide(session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> Verdict {
    let c = ctx.route.as_ref().and_then(|r| r.compress.as_ref());
    let req = session.req_header();
    let http10 = req.version < http::Version::HTTP_11;
    let status = resp.status.as_u16();
    let (verdict, encoder) = compress::decide(
        c,
        req.method.as_str(),
        http10,
        &req.headers,
        status,
        &resp.headers,
    );
    ctx.encoder = encoder;
    verdict
}

/// Passes a body piece through the encoder, if the response is compressed.
pub(super) fn body(ctx: &mut Ctx, body: &mut Option<Bytes>, end: bool) -> Result<()> {
    if let Some(encoder) = ctx.encoder.as_mut() {
        *body = compressed(encoder, body.as_deref().unwrap_or_default(), end)?;
        if end {
            ctx.encoder = None;
        }
    }
    Ok(())
}

/// The encoder's last bytes, when the body of a compressed response ends without its last
/// piece (its trailers came).
pub(super) fn finish(ctx: &mut Ctx) -> Result<Option<Bytes>> {
    match ctx.encoder.take() {
        Some(mut encoder) => compressed(&mut encoder, &[], true),
        None => Ok(None),
    }
}

/// `data` compressed by `encoder` (`None` for nothing to send before the end).
fn compressed(encoder: &mut Encoder, data: &[u8], end: bool) -> Result<Option<Bytes>> {
    let mut out = Vec::new();
    if let Err(e) = encoder.feed(data, end, &mut out) {
        tracing::warn!("compressing the response: {e}");
        return Err(respond::http_error(500, "compressing the response"));
    }
    Ok((end || !out.is_empty()).then(|| Bytes::from(out)))
}
