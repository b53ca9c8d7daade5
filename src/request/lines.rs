//! Header lines as the request rules read and write them: what a header name means to a proxy
//! (`Kind`, classified once per line), the lines of a message (`Lines`: httparse's, pingora's
//! `HeaderMap`, or lines classified already), where written lines go (`HeaderSink`: HTTP/1.1
//! bytes or a pingora head), and numbers and addresses as text without `fmt`.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};

/// What a header name means to a proxy; one match on the length, then a case-insensitive compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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

pub fn kind(name: &str) -> Kind {
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

/// The tokens of a `Connection` value, split on the raw bytes (a value with a non-ASCII byte
/// still has its other tokens honoured).
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// One Content-Length value: all digits and no overflow.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A message's header lines, in order, each with its `Kind` (a parser that classified its lines
/// once hands the kinds over, so the rules below never classify a line twice).
pub trait Lines {
    fn each<'s>(&'s self, f: impl FnMut(Kind, &'s str, &'s [u8]));
}

impl<'b> Lines for [httparse::Header<'b>] {
    fn each<'s>(&'s self, mut f: impl FnMut(Kind, &'s str, &'s [u8])) {
        self.iter().for_each(|h| f(kind(h.name), h.name, h.value));
    }
}

impl Lines for http::HeaderMap {
    fn each<'s>(&'s self, mut f: impl FnMut(Kind, &'s str, &'s [u8])) {
        self.iter()
            .for_each(|(n, v)| f(kind(n.as_str()), n.as_str(), v.as_bytes()));
    }
}

/// Parsed header lines with their kinds, classified once.
#[derive(Debug, Clone, Copy)]
pub struct Kinded<'a, 'b> {
    pub headers: &'a [httparse::Header<'b>],
    pub kinds: &'a [Kind],
}

impl<'a, 'b> Kinded<'a, 'b> {
    /// Classifies `headers` into `kinds` (which must be at least as long).
    pub fn new(headers: &'a [httparse::Header<'b>], kinds: &'a mut [Kind]) -> Kinded<'a, 'b> {
        for (k, h) in kinds.iter_mut().zip(headers) {
            *k = kind(h.name);
        }
        Kinded {
            headers,
            kinds: &kinds[..headers.len().min(kinds.len())],
        }
    }
}

impl Lines for Kinded<'_, '_> {
    fn each<'s>(&'s self, mut f: impl FnMut(Kind, &'s str, &'s [u8])) {
        for (h, k) in self.headers.iter().zip(self.kinds) {
            f(*k, h.name, h.value);
        }
    }
}

/// Where forwarded header lines go: HTTP/1.1 bytes, or a pingora header.
pub trait HeaderSink {
    fn header(&mut self, name: &[u8], value: &[u8]);

    /// One header whose value is `parts` joined by `sep`.
    fn joined(&mut self, name: &[u8], parts: &[&[u8]], sep: &[u8]) {
        let value = parts.join(sep);
        self.header(name, &value);
    }
}

/// HTTP/1.1 header lines.
impl HeaderSink for Vec<u8> {
    fn header(&mut self, name: &[u8], value: &[u8]) {
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }

    fn joined(&mut self, name: &[u8], parts: &[&[u8]], sep: &[u8]) {
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.extend_from_slice(sep);
            }
            self.extend_from_slice(part);
        }
        self.extend_from_slice(b"\r\n");
    }
}

/// A pingora request or response head. A line that is not a valid header (it cannot come from
/// a parsed message) is dropped.
macro_rules! pingora_sink {
    ($t:ty) => {
        impl HeaderSink for $t {
            fn header(&mut self, name: &[u8], value: &[u8]) {
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    let _ = self.append_header(n, v);
                }
            }
        }
    };
}
pingora_sink!(pingora_http::RequestHeader);
pingora_sink!(pingora_http::ResponseHeader);

/// A number in decimal, written without the formatting machinery.
#[derive(Default)]
pub struct Digits([u8; 20]);

impl Digits {
    pub fn of(&mut self, mut n: u64) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        &self.0[i..]
    }
}

/// An address as text, on the stack.
pub struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b".");
                    }
                    let mut d = Digits::default();
                    let digits = d.of(u64::from(octet));
                    t.buf[t.len..t.len + digits.len()].copy_from_slice(digits);
                    t.len += digits.len();
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cur = std::io::Cursor::new(&mut t.buf[..]);
                let _ = write!(cur, "{v6}");
                t.len = cur.position() as usize;
            }
        }
        t
    }

    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_as_text() {
        for n in [0u64, 7, 200, 65535, u64::MAX] {
            assert_eq!(Digits::default().of(n), n.to_string().as_bytes());
        }
        for ip in [
            "0.0.0.0",
            "192.168.10.255",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let text = IpText::new(ip.parse().unwrap());
            assert_eq!(String::from_utf8_lossy(text.as_bytes()), ip);
        }
    }
}
