//! Request ids: the client's `X-Request-Id` when it is usable, else 128 random bits. The id
//! goes upstream, back to the client and into the access log.

use super::headers::{Kind, Lines};

/// The request id a client sent: its first `X-Request-Id` line.
pub fn given<L: Lines + ?Sized>(lines: &L) -> Option<&[u8]> {
    let mut first = None;
    lines.each(|k, _, value| {
        if first.is_none() && k == Kind::RequestId {
            first = Some(value);
        }
    });
    first
}

/// A client's request id is kept when it is 1 to 128 printable ASCII characters.
pub fn usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
}

/// 128 random bits as 32 lowercase hex digits.
pub fn new_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    buf
}

/// The id of a request whose client sent `given`.
#[derive(Debug, Clone)]
pub enum RequestId<'a> {
    Kept(&'a [u8]),
    New([u8; 32]),
}

impl<'a> RequestId<'a> {
    pub fn of(given: Option<&'a [u8]>) -> RequestId<'a> {
        match given {
            Some(id) if usable(id) => RequestId::Kept(id),
            _ => RequestId::New(new_id()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Kept(id) => id,
            RequestId::New(id) => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn the_first_line_is_the_given_id() {
        let lines = [
            httparse::Header {
                name: "X-Request-Id",
                value: b"",
            },
            httparse::Header {
                name: "x-request-id",
                value: b"1",
            },
        ];
        assert_eq!(given(&lines[..]), Some(&b""[..]));
        assert_eq!(RequestId::of(given(&lines[..])).as_bytes().len(), 32);
    }

    #[test]
    fn a_printable_client_id_is_kept() {
        assert_eq!(RequestId::of(Some(b"abc-123")).as_bytes(), b"abc-123");
        assert_eq!(RequestId::of(Some(b"has space")).as_bytes().len(), 32);
        assert_eq!(RequestId::of(Some(&[b'a'; 129])).as_bytes().len(), 32);
        assert_eq!(RequestId::of(None).as_bytes().len(), 32);
    }
}
