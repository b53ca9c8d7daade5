//! HTTP/1.1 message heads on the fast path: the client's request (`request.rs`: parsed here or
//! taken from pingora's HTTP/2 parse, written upstream) and the upstream's response
//! (`response.rs`: parsed, written back), plus what both share: header kinds and line writing.

mod request;
mod response;

use std::io::Write;
use std::mem::MaybeUninit;
use std::net::IpAddr;

use httparse::Header;

pub use request::{from_pingora, parse_request, write_upstream_request, Client, Parsed, Request};
pub use response::{
    parse_response, write_client_response, write_local_response, Added, BadResponse, ResponseHead,
};

/// Header lines accepted in one head; more sends the request to pingora's path (and makes an
/// upstream response a 502).
pub const MAX_HEADERS: usize = 100;

/// Room for the header lines of one head, left uninitialised until parsed (no 3 KiB memset per
/// head).
pub type Storage<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

pub fn storage<'b>() -> Storage<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// What a header name means to a proxy; one match on the length, then a case-insensitive compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Hop-by-hop: never forwarded (RFC 9110 7.6.1).
    Hop,
    Connection,
    Host,
    ContentLength,
    TransferEncoding,
    Expect,
    Upgrade,
    /// Set by rproxy on every forwarded request; the client's value is replaced.
    Forwarded,
    XForwardedFor,
    RequestId,
    Date,
    Hsts,
    Cookie,
    Other,
}

pub(super) fn kind(name: &str) -> Kind {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Kind::Hop,
        4 if is("host") => Kind::Host,
        4 if is("date") => Kind::Date,
        6 if is("expect") => Kind::Expect,
        6 if is("cookie") => Kind::Cookie,
        7 if is("upgrade") => Kind::Upgrade,
        7 if is("trailer") => Kind::Hop,
        9 if is("x-real-ip") => Kind::Forwarded,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::Hop,
        12 if is("x-request-id") => Kind::RequestId,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        16 if is("proxy-connection") => Kind::Hop,
        16 if is("x-forwarded-host") => Kind::Forwarded,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::Forwarded,
        18 if is("proxy-authenticate") => Kind::Hop,
        19 if is("proxy-authorization") => Kind::Hop,
        25 if is("strict-transport-security") => Kind::Hsts,
        _ => Kind::Other,
    }
}

pub(super) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// All digits and no overflow.
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Is `name` one of the tokens of a `Connection` header of `headers`?
pub(super) fn named_in_connection(headers: &[Header], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| kind(h.name) == Kind::Connection)
        .flat_map(|h| connection_tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Writes `n` in decimal (what `write!` does, without the formatting machinery).
pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(super) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

pub(super) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The length of the head at the start of `buf` (through its empty line), once it is all there.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        match buf.get(at + 1..at + 3) {
            Some([b'\n', _]) => return Some(at + 2),
            Some([b'\r', b'\n']) => return Some(at + 3),
            None if buf.get(at + 1) == Some(&b'\n') => return Some(at + 2),
            _ => {}
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_as_text() {
        let mut out = Vec::new();
        for n in [0u64, 7, 200, 65535, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for ip in ["0.0.0.0", "192.168.10.255", "2001:db8::1", "::ffff:1.2.3.4"] {
            out.clear();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8_lossy(&out), ip);
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    }
}
