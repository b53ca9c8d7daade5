//! Raw bytes as the start of a plain-HTTP connection and as a request head:
//! `sniff::classify` and `proxy::framing::check` must never panic, and agree with their rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy::proxy::framing;
use rproxy::sniff::{classify, Start};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Some(Start::H2c) => assert!(data.starts_with(H2_PREFACE)),
        // Undecided only while no line is complete and it is no TLS record.
        None => assert!(!data.contains(&b'\n') && data.first() != Some(&0x16)),
        Some(Start::Gone) => panic!("classify never says Gone"),
        Some(Start::Http1) | Some(Start::Refused) => {}
    }
    if let Some(why) = framing::check(data) {
        assert!(!why.is_empty());
    } else {
        // Accepted framing: at most one Transfer-Encoding, and not next to a Content-Length.
        let names: Vec<Vec<u8>> = data
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|l| {
                l.iter()
                    .position(|&b| b == b':')
                    .map(|c| l[..c].to_ascii_lowercase())
            })
            .collect();
        let te = names
            .iter()
            .filter(|n| n.as_slice() == b"transfer-encoding")
            .count();
        let cl = names
            .iter()
            .filter(|n| n.as_slice() == b"content-length")
            .count();
        assert!(te <= 1, "two Transfer-Encodings accepted");
        assert!(
            te == 0 || cl == 0,
            "Content-Length with Transfer-Encoding accepted"
        );
    }
});
