//! HTTP/1.1 message heads on the fast path: the client's request (`request.rs`: parsed here or
//! taken from pingora's HTTP/2 parse, written upstream) and the upstream's response
//! (`response.rs`: parsed, written back). Which headers cross is `crate::request::headers`' rule;
//! this module only reads and writes the bytes.

mod request;
mod response;

use std::mem::MaybeUninit;

use httparse::Header;

pub use request::{from_pingora, parse_request, write_upstream_request, Client, Parsed, Request};
pub use response::{parse_response, write_client_response, write_local_response, BadResponse};
pub use response::{Added, ResponseHead};

/// Header lines accepted in one head; more sends the request to pingora's path (and makes an
/// upstream response a 502).
pub const MAX_HEADERS: usize = 100;

/// Room for the header lines of one head, left uninitialised until parsed (no 3 KiB memset per
/// head).
pub type Storage<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

pub fn storage<'b>() -> Storage<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
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
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    }
}
