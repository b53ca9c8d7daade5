//! curl as a test client, over HTTP/1.1, h2c (prior knowledge) or TLS h2: the response head and
//! the body exactly as sent; and decoders for the content codings rproxy produces.

use std::io::Read;

use super::Proxy;

/// How curl speaks to rproxy.
#[derive(Debug, Clone, Copy)]
pub enum Proto {
    H1,
    H2c,
    H2Tls,
}

pub const PROTOS: [Proto; 3] = [Proto::H1, Proto::H2c, Proto::H2Tls];

/// A response as curl got it: the head (lowercase) and the body as sent (not decoded).
pub struct Got {
    pub head: String,
    pub body: Vec<u8>,
}

impl Got {
    /// The value of the first `name:` line (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = format!("{name}:");
        self.head
            .lines()
            .find(|l| l.starts_with(&want))
            .map(|l| l[want.len()..].trim())
    }

    pub fn status(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }
}

/// Runs curl against `p` over `proto` with `extra` arguments; the body is as sent (curl decodes
/// nothing unless `extra` says `--compressed`).
pub async fn curl(p: &Proxy, proto: Proto, path: &str, extra: &[&str]) -> Got {
    let (url, flag) = match proto {
        Proto::H1 => (p.url(path), "--http1.1"),
        Proto::H2c => (p.url(path), "--http2-prior-knowledge"),
        Proto::H2Tls => (
            format!("https://127.0.0.1:{}{path}", p.https_addr().port()),
            "--http2",
        ),
    };
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "-D", "-", flag])
        .args(extra)
        .arg(&url)
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    Got {
        head: String::from_utf8_lossy(&out.stdout[..at]).to_ascii_lowercase(),
        body: out.stdout[at + 4..].to_vec(),
    }
}

/// `data` decoded from `encoding` (gzip, br or zstd) with the crates rproxy encodes with.
pub fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(data, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out)),
        other => panic!("no decoder for {other}"),
    }
    .unwrap_or_else(|e| panic!("{encoding} does not decode: {e}"));
    out
}
