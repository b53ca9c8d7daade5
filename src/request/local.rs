//! The responses rproxy writes itself (errors, refusals, redirects): a short plain-text body
//! that names no internals (the log says why), and the header lines every engine writes for
//! them. Which refusal gets which status and headers is decided here too.

use http::StatusCode;

use super::headers::{added_lines, Added, Digits, HeaderSink};
use super::limits::Refusal;

/// The reason phrase of `status`, or `""`.
pub fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// The body of a response rproxy makes itself: `404 Not Found` and a newline.
pub fn text(status: u16) -> String {
    format!("{status} {}\n", reason(status))
}

/// The headers a status rproxy answers with always carries: a 503 says when to come back.
pub fn status_headers(status: u16) -> &'static [(&'static str, &'static str)] {
    match status {
        503 => &[("retry-after", "1")],
        _ => &[],
    }
}

/// The answer to a refused request: its status and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalAnswer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    retry_after: String,
}

impl RefusalAnswer {
    /// The headers it carries.
    pub fn headers(&self) -> [(&str, &str); 1] {
        [("retry-after", self.retry_after.as_str())]
    }
}

/// How a refusal is answered.
pub fn refusal(r: Refusal) -> RefusalAnswer {
    let (status, after) = match r {
        Refusal::RateLimited(after) => (429, after),
        Refusal::Busy | Refusal::NoServer => (503, 1),
    };
    RefusalAnswer {
        status,
        retry_after: after.to_string(),
    }
}

/// Writes the header lines of a local response with a body of `len` bytes: its type and
/// length, the status's own headers, `extra`, then Date, X-Request-Id and HSTS.
pub fn head_lines<S: HeaderSink>(
    status: u16,
    len: usize,
    extra: &[(&str, &str)],
    added: &Added,
    out: &mut S,
) {
    out.header(b"content-type", b"text/plain; charset=utf-8");
    out.header(b"content-length", Digits::default().of(len as u64));
    let own = status_headers(status);
    let replaced = |n: &&str| extra.iter().any(|(e, _)| e == n);
    for (name, value) in own.iter().filter(|(n, _)| !replaced(n)).chain(extra) {
        out.header(name.as_bytes(), value.as_bytes());
    }
    added_lines(added, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_answer() {
        assert_eq!(text(413), "413 Payload Too Large\n");
        let mut out = Vec::new();
        let added = Added {
            request_id: b"id",
            hsts: None,
            date: b"",
            set_cookie: None,
        };
        head_lines(503, 24, &[("x-a", "1")], &added, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "content-type: text/plain; charset=utf-8\r\ncontent-length: 24\r\n\
             retry-after: 1\r\nx-a: 1\r\nx-request-id: id\r\n"
        );
        let limited = refusal(Refusal::RateLimited(3));
        assert_eq!(
            (limited.status, limited.headers()),
            (429, [("retry-after", "3")])
        );
        let none = refusal(Refusal::NoServer);
        assert_eq!((none.status, none.headers()), (503, [("retry-after", "1")]));
    }
}
