//! gRPC as a proxy sees it: which requests are gRPC calls, the gRPC status a call gets when
//! rproxy fails it (a trailers-only answer gRPC clients read, not an HTTP error page), and the
//! deadline a call carries (`grpc-timeout`), which bounds how long rproxy waits upstream.

use std::time::Duration;

use super::headers::{added_lines, Added, HeaderSink, Lines};

/// Is this a gRPC call (`content-type: application/grpc`, `+proto` and the like)? Its answers
/// from rproxy are gRPC statuses, which gRPC clients read, not HTTP errors.
pub fn is_grpc<L: Lines + ?Sized>(lines: &L) -> bool {
    let mut grpc = false;
    lines.each(|_, name, value| {
        grpc |= name.eq_ignore_ascii_case("content-type")
            && value.len() >= 16
            && value[..16].eq_ignore_ascii_case(b"application/grpc");
    });
    grpc
}

/// The gRPC status (code, message) of a failure rproxy answers with HTTP `status`: a server
/// that cannot be reached is UNAVAILABLE (14), a deadline or timeout DEADLINE_EXCEEDED (4),
/// a limit RESOURCE_EXHAUSTED (8), no route UNIMPLEMENTED (12), a bad request INTERNAL (13)
/// (gRPC's HTTP-to-status mapping, with rproxy's own timeouts told apart).
pub fn grpc_status(status: u16) -> (&'static str, &'static str) {
    match status {
        502 | 503 => ("14", "upstream unavailable"),
        504 | 408 => ("4", "upstream timed out"),
        413 | 429 => ("8", "over a limit of the proxy"),
        404 => ("12", "no route for this method"),
        400 | 431 => ("13", "malformed request"),
        _ => ("2", "proxy error"),
    }
}

/// The gRPC status of rproxy's own answer with HTTP `status` to a request with `lines`: a
/// gRPC call that rproxy fails is answered in gRPC's terms (`head_lines`); `None` for any
/// other answer.
pub fn local_answer<L: Lines + ?Sized>(lines: &L, status: u16) -> Option<u16> {
    if status < 400 || !is_grpc(lines) {
        return None;
    }
    grpc_status(status).0.parse().ok()
}

/// A `grpc-status` header or trailer's code; `None` when absent or not a number.
pub fn code_in(headers: &http::HeaderMap) -> Option<u16> {
    let value = headers.get("grpc-status")?;
    std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()
}

/// Writes the head of a gRPC answer to a call rproxy fails with HTTP `status`: 200 with the
/// gRPC status in it and no body ("trailers-only"), then Date and X-Request-Id.
pub fn head_lines<S: HeaderSink>(status: u16, added: &Added, out: &mut S) {
    let (code, message) = grpc_status(status);
    out.header(b"content-type", b"application/grpc");
    out.header(b"grpc-status", code.as_bytes());
    out.header(b"grpc-message", message.as_bytes());
    added_lines(added, out);
}

/// The call's deadline from `grpc-timeout` (`100m`, `5S`, `1H`...), if it has a valid one.
pub fn timeout<L: Lines + ?Sized>(lines: &L) -> Option<Duration> {
    let mut found = None;
    lines.each(|_, name, value| {
        if found.is_none() && name.eq_ignore_ascii_case("grpc-timeout") {
            found = parse_timeout(value);
        }
    });
    found
}

/// At most 8 digits and a unit (gRPC over HTTP/2, "Timeout").
fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_get_grpc_statuses() {
        let call = [httparse::Header {
            name: "Content-Type",
            value: b"application/grpc+proto",
        }];
        assert!(is_grpc(&call[..]));
        let json = [httparse::Header {
            name: "content-type",
            value: b"application/json",
        }];
        assert!(!is_grpc(&json[..]));
        assert_eq!(grpc_status(503).0, "14");
        assert_eq!(grpc_status(504).0, "4");
        assert_eq!(grpc_status(502).0, "14");
        assert_eq!(local_answer(&call[..], 503), Some(14));
        assert_eq!(local_answer(&call[..], 404), Some(12));
        assert_eq!(local_answer(&call[..], 200), None, "not a failure");
        assert_eq!(local_answer(&json[..], 503), None, "not a gRPC call");
    }

    #[test]
    fn deadlines() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"-1S"), None);
    }
}
