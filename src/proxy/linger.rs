//! What follows a 413 on pingora's path: the rest of the refused upload is read and dropped,
//! within `crate::request::limits::LINGER`, so the client reads the answer instead of a reset.
//! Over HTTP/1.1 the connection closes after it (nginx's lingering close); over HTTP/2, a
//! client still sending when the bound is reached gets `RST_STREAM(NO_ERROR)` as the stream is
//! dropped (RFC 9113 8.1), and the connection stays up for its other streams.

use std::time::Instant;

use pingora_proxy::Session;

use crate::request::limits::LINGER;

/// Reads the rest of the request body and drops it; returns how many bytes that was.
pub async fn drain_upload(session: &mut Session) -> u64 {
    let start = Instant::now();
    let mut dropped = 0u64;
    while dropped < LINGER.bytes {
        let wait = LINGER
            .time
            .saturating_sub(start.elapsed())
            .min(LINGER.pause);
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, session.read_request_body()).await {
            Ok(Ok(Some(data))) => dropped += data.len() as u64,
            _ => break,
        }
    }
    tracing::debug!(dropped, "refused upload read to its end");
    dropped
}
