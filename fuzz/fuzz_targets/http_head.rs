//! Raw bytes as the start of a plain-HTTP connection and as a request head:
//! `sniff::classify` and `request::framing::request_framing` over `RawHead` must never panic, and
//! agree with their rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy::request::framing::{request_framing, BadFraming, BodyFraming, RawHead};
use rproxy::sniff::{classify, Start};
use rproxy_fuzz::decimal;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Some(Start::H2c) => assert!(data.starts_with(H2_PREFACE)),
        // Undecided only while no line is complete and it is no TLS record.
        None => assert!(!data.contains(&b'\n') && data.first() != Some(&0x16)),
        Some(Start::Gone) => panic!("classify never says Gone"),
        Some(Start::Http1) | Some(Start::Refused) => {}
    }
    assert_eq!(
        request_framing(&RawHead(data)),
        model(data),
        "{}",
        rproxy_fuzz::show(data)
    );
});

/// The verdict from RFC 9112 6.1-6.3 and RFC 9110 8.6, over the lines after the first (a name
/// is what precedes the first `:`, less trailing whitespace, and must be text): one plain
/// `chunked` Transfer-Encoding and no Content-Length, or Content-Length values that are all the
/// same number, or neither.
fn model(data: &[u8]) -> Result<BodyFraming, BadFraming> {
    let mut te: Vec<&[u8]> = Vec::new();
    let mut lengths: Vec<Option<u64>> = Vec::new();
    for line in data.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        match name.trim_ascii_end().to_ascii_lowercase().as_str() {
            "transfer-encoding" => te.push(value),
            "content-length" => lengths.extend(
                value
                    .split(|&b| b == b',')
                    .map(|t| decimal(t.trim_ascii()).filter(|_| t.trim_ascii().len() <= 19)),
            ),
            _ => {}
        }
    }
    let length = match lengths.first() {
        None => None,
        Some(Some(n)) if lengths.iter().all(|l| *l == Some(*n)) => Some(*n),
        Some(_) => return Err(BadFraming::Length),
    };
    match (te.as_slice(), length) {
        ([], None) => Ok(BodyFraming::None),
        ([], Some(n)) => Ok(BodyFraming::Length(n)),
        ([one], None) if one.eq_ignore_ascii_case(b"chunked") => Ok(BodyFraming::Chunked),
        (_, None) => Err(BadFraming::Encoding),
        (_, Some(_)) => Err(BadFraming::Both),
    }
}
