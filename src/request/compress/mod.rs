//! Response compression, per route (`compress`), decided once for both engines: which encoding a
//! request accepts (`asked`: Accept-Encoding q-values, ties to the route's order), whether a
//! response is compressed, only varies, or is left alone (`verdict`), the header lines that
//! follow from it (`Rewrite`: Vary, Content-Encoding, no Content-Length, weak ETag), and the
//! streaming encoder (`encode.rs`). Engines only carry the bytes.

mod encode;

pub use encode::Encoder;

use super::headers::{HeaderSink, Kind, Lines};

/// A content coding rproxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    /// The server's preference when a route says `compress: true`.
    pub const DEFAULT_ORDER: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The name in `Accept-Encoding`, `Content-Encoding` and `proxy.yaml`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    pub fn parse(name: &str) -> Option<Encoding> {
        let name = name.trim();
        Encoding::DEFAULT_ORDER
            .into_iter()
            .find(|e| e.token().eq_ignore_ascii_case(name))
    }
}

/// The content types compressed when a route does not list its own (`compress_types`): text
/// and the structured-text formats, as nginx and Caddy users list them.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "*+json",
    "*+xml",
    "application/json",
    "application/x-ndjson",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/yaml",
    "application/toml",
    "application/x-www-form-urlencoded",
    "application/vnd.ms-fontobject",
    "font/ttf",
    "font/otf",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
];

/// Responses with a Content-Length below this are sent as they are (Caddy's `minimum_length`).
pub const DEFAULT_MIN_SIZE: u64 = 512;

/// One entry of a type list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    /// `*`: every type.
    Any,
    /// `text/*`: the part before the slash, with the slash.
    Family(String),
    /// `*+json`: a structured-syntax suffix, with the `+`.
    Suffix(String),
    /// `application/json`.
    Exact(String),
}

impl TypePattern {
    /// `*`, `type/*`, `*+suffix` or `type/subtype` (case-insensitive).
    pub fn parse(text: &str) -> Option<TypePattern> {
        let t = text.trim().to_ascii_lowercase();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if t == "*" || t == "*/*" {
            return Some(TypePattern::Any);
        }
        if let Some(suffix) = t.strip_prefix("*+").filter(|s| token(s)) {
            return Some(TypePattern::Suffix(format!("+{suffix}")));
        }
        let (family, sub) = t.split_once('/')?;
        if !token(family) {
            return None;
        }
        match sub {
            "*" => Some(TypePattern::Family(format!("{family}/"))),
            s if token(s) => Some(TypePattern::Exact(t.clone())),
            _ => None,
        }
    }

    /// Does the (lowercase, parameter-free) media type `mime` match?
    fn matches(&self, mime: &str) -> bool {
        match self {
            TypePattern::Any => true,
            TypePattern::Family(f) => mime.starts_with(f.as_str()),
            TypePattern::Suffix(s) => mime.ends_with(s.as_str()),
            TypePattern::Exact(e) => mime == e,
        }
    }
}

/// A route's compression settings, compiled from `compress`, `compress_types` and
/// `compress_min_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// In the server's order of preference.
    pub encodings: Vec<Encoding>,
    pub types: Vec<TypePattern>,
    pub min_size: u64,
}

impl Compression {
    /// `DEFAULT_TYPES` and `DEFAULT_MIN_SIZE` with `encodings`.
    pub fn with_defaults(encodings: Vec<Encoding>) -> Compression {
        Compression {
            encodings,
            types: DEFAULT_TYPES
                .iter()
                .filter_map(|t| TypePattern::parse(t))
                .collect(),
            min_size: DEFAULT_MIN_SIZE,
        }
    }

    fn compressible(&self, content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let Ok(essence) = std::str::from_utf8(essence) else {
            return false;
        };
        let mime = essence.to_ascii_lowercase();
        !mime.is_empty() && self.types.iter().any(|p| p.matches(&mime))
    }
}

/// What a request allows its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// The route does not compress.
    Off,
    /// The route compresses, but not the answer to this request (no encoding accepted, HEAD,
    /// Range, HTTP/1.0): a compressible response only gets `Vary: Accept-Encoding`.
    VaryOnly,
    Use(Encoding),
}

/// What the request (method, whether it is HTTP/1.0, header lines) allows on a route with
/// compression `c`.
pub fn asked<L: Lines + ?Sized>(
    c: Option<&Compression>,
    method: &str,
    http10: bool,
    lines: &L,
) -> Asked {
    let Some(c) = c else {
        return Asked::Off;
    };
    let mut ranged = false;
    let mut accept = Accepted::default();
    lines.each(|_, name, value| {
        if name.eq_ignore_ascii_case("accept-encoding") {
            accept.read(value);
        } else if name.eq_ignore_ascii_case("range") {
            ranged = true;
        }
    });
    if method == "HEAD" || http10 || ranged {
        return Asked::VaryOnly;
    }
    accept
        .choose(&c.encodings)
        .map_or(Asked::VaryOnly, Asked::Use)
}

/// The q-values (in thousandths) an Accept-Encoding gave what rproxy cares about.
#[derive(Debug, Default)]
struct Accepted {
    /// br, zstd, gzip (the order of `Encoding::DEFAULT_ORDER`).
    named: [Option<u16>; 3],
    any: Option<u16>,
    identity: Option<u16>,
}

impl Accepted {
    fn read(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let mut q = Some(1000);
            for param in parts {
                let param = param.trim_ascii();
                if let Some(v) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    q = qvalue(v.trim_ascii());
                }
            }
            let Some(q) = q else { continue };
            let slot = match std::str::from_utf8(coding) {
                Ok("*") => &mut self.any,
                Ok(c) if c.eq_ignore_ascii_case("identity") => &mut self.identity,
                Ok(c) => match Encoding::parse(c) {
                    Some(e) => &mut self.named[e as usize],
                    None => continue,
                },
                Err(_) => continue,
            };
            // A coding named twice: the lower weight holds (the careful reading).
            *slot = Some(slot.map_or(q, |old| old.min(q)));
        }
    }

    /// The best encoding of `prefs` by q-value, ties going to the earlier in `prefs`; none
    /// when all are refused (q=0) or the client prefers `identity` outright.
    fn choose(&self, prefs: &[Encoding]) -> Option<Encoding> {
        let mut best: Option<(Encoding, u16)> = None;
        for &e in prefs {
            let q = self.named[e as usize].or(self.any).unwrap_or(0);
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((e, q));
            }
        }
        let (e, q) = best?;
        match self.identity {
            Some(id) if id > q => None,
            _ => Some(e),
        }
    }
}

/// A qvalue (`0`, `0.5`, `1`, `1.000`) in thousandths; `None` when malformed (the item is
/// ignored).
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(at) => (&v[..at], &v[at + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// What happens to one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed on as it is.
    Untouched,
    /// Passed on as it is, with `Vary: Accept-Encoding` (it could have been compressed).
    Vary,
    /// Compressed with this encoding, streamed.
    Compress(Encoding),
}

impl Verdict {
    pub fn compresses(self) -> Option<Encoding> {
        match self {
            Verdict::Compress(e) => Some(e),
            _ => None,
        }
    }
}

/// What happens to a response of `status` with header `lines`, for a request that `asked`
/// on a route with compression `c`. Left alone: 1xx, 204, 206, 304, a response already
/// encoded or carrying a Content-Range, `Cache-Control: no-transform`, a type not in the
/// route's list (or none). A compressible response below the minimum size only varies.
pub fn verdict<L: Lines + ?Sized>(
    c: Option<&Compression>,
    asked: Asked,
    status: u16,
    lines: &L,
) -> Verdict {
    let Some(c) = c.filter(|_| asked != Asked::Off) else {
        return Verdict::Untouched;
    };
    if status < 200 || matches!(status, 204 | 206 | 304) {
        return Verdict::Untouched;
    }
    let (mut compressible, mut blocked, mut length) = (false, false, None);
    lines.each(|_, name, value| {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("content-type") {
            compressible = c.compressible(value);
        } else if is("content-encoding") {
            blocked |= !value.trim_ascii().eq_ignore_ascii_case(b"identity");
        } else if is("content-range") {
            blocked = true;
        } else if is("cache-control") {
            blocked |= value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"));
        } else if is("content-length") {
            length = super::headers::parse_length(value.trim_ascii());
        }
    });
    if blocked || !compressible {
        return Verdict::Untouched;
    }
    match asked {
        Asked::Use(e) if length.is_none_or(|n| n >= c.min_size) => Verdict::Compress(e),
        _ => Verdict::Vary,
    }
}

/// Everything decided about one response (`asked`, then `verdict`) with the encoder of a
/// compressed one; an encoder that cannot be made leaves the body as it is (it only varies).
pub fn decide<Q: Lines + ?Sized, R: Lines + ?Sized>(
    c: Option<&Compression>,
    method: &str,
    http10: bool,
    request: &Q,
    status: u16,
    response: &R,
) -> (Verdict, Option<Encoder>) {
    if c.is_none() {
        return (Verdict::Untouched, None);
    }
    let asked = asked(c, method, http10, request);
    let verdict = verdict(c, asked, status, response);
    let Some(encoding) = verdict.compresses() else {
        return (verdict, None);
    };
    let mut length = None;
    response.each(|k, _, v| {
        if k == Kind::ContentLength {
            length = super::headers::parse_length(v.trim_ascii());
        }
    });
    match Encoder::new(encoding, length) {
        Ok(encoder) => (verdict, Some(encoder)),
        Err(e) => {
            tracing::warn!("cannot start a {} encoder: {e}", encoding.token());
            (Verdict::Vary, None)
        }
    }
}

/// A `HeaderSink` that writes a response's lines as `verdict` has them: `Vary` gains
/// `Accept-Encoding` (merged into the first Vary line, or added); a compressed response loses
/// Content-Length, Accept-Ranges and its upstream framing, its strong ETag turns weak (as
/// nginx does), and it gains `Content-Encoding` and `Transfer-Encoding: chunked` (which an
/// HTTP/2 writer drops). Call `finish` after the last line.
pub struct Rewrite<'s, S: HeaderSink> {
    out: &'s mut S,
    verdict: Verdict,
    varied: bool,
}

impl<'s, S: HeaderSink> Rewrite<'s, S> {
    pub fn new(verdict: Verdict, out: &'s mut S) -> Self {
        Rewrite {
            out,
            verdict,
            varied: false,
        }
    }

    pub fn finish(self) {
        if self.verdict == Verdict::Untouched {
            return;
        }
        if !self.varied {
            self.out.header(b"vary", b"Accept-Encoding");
        }
        if let Some(e) = self.verdict.compresses() {
            self.out.header(b"content-encoding", e.token().as_bytes());
            self.out.header(b"transfer-encoding", b"chunked");
        }
    }
}

impl<S: HeaderSink> HeaderSink for Rewrite<'_, S> {
    fn header(&mut self, name: &[u8], value: &[u8]) {
        if self.verdict == Verdict::Untouched {
            return self.out.header(name, value);
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("vary") && !self.varied {
            self.varied = true;
            let named = value.split(|&b| b == b',').any(|t| {
                let t = t.trim_ascii();
                t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding")
            });
            if named || value.trim_ascii().is_empty() {
                let value: &[u8] = if named { value } else { b"Accept-Encoding" };
                return self.out.header(name, value);
            }
            return self
                .out
                .header(name, &[value, b", Accept-Encoding"].concat());
        }
        if self.verdict.compresses().is_none() {
            return self.out.header(name, value);
        }
        if is("content-length") || is("accept-ranges") || is("transfer-encoding") {
            return;
        }
        if is("etag") && !value.starts_with(b"W/") {
            return self.out.header(name, &[b"W/", value].concat());
        }
        self.out.header(name, value)
    }
}

/// Writes the forwarded response lines (`headers::forward_response`) as `verdict` has them.
pub fn forward_response<L: Lines + ?Sized, S: HeaderSink>(
    lines: &L,
    length: Option<u64>,
    added: &super::headers::Added,
    verdict: Verdict,
    out: &mut S,
) {
    if verdict == Verdict::Untouched {
        return super::headers::forward_response(lines, length, added, out);
    }
    let mut rewrite = Rewrite::new(verdict, out);
    super::headers::forward_response(lines, length, added, &mut rewrite);
    rewrite.finish();
}

#[cfg(test)]
mod tests;
