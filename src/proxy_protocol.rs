//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners with `proxy_protocol: true`:
//! the header a load balancer sends before a connection's own bytes, naming the client. A peer
//! in `server.trusted_proxies` must send one (without it the connection is closed), and the
//! client it names becomes the connection's peer address for everything after (X-Forwarded-For,
//! `client::client_of`, `ip_hash`, `rate_limit`, the access log). Any other peer is served as a
//! direct client, and closed if it sends a header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::BytesMut;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use tokio::io::AsyncReadExt;

use crate::request::client::TrustedProxies;

const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// The client's address.
    Client(SocketAddr),
    /// No client (v2 LOCAL, v1 UNKNOWN, or a family other than TCP over IPv4/IPv6): the
    /// connection's own peer stands.
    Peer,
}

/// How far the bytes read so far go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    /// A whole header of this many bytes.
    Header(Declared, usize),
    /// Not a PROXY header at all.
    Absent,
    Incomplete,
    Malformed(&'static str),
}

/// Why a connection was closed before any request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("no PROXY protocol header from trusted peer {0}")]
    Missing(IpAddr),
    #[error("malformed PROXY protocol header from {0}: {1}")]
    Malformed(IpAddr, &'static str),
    #[error("PROXY protocol header from {0}, which is not in server.trusted_proxies")]
    Untrusted(IpAddr),
    #[error("no PROXY protocol header in time from {0}")]
    Timeout(IpAddr),
    #[error("closed before its PROXY protocol header")]
    Closed,
}

/// Reads the PROXY header a connection from a trusted peer starts with and makes the client it
/// names the connection's peer address; for any other peer, checks that no header is sent. The
/// bytes after the header are put back for the next reader (TLS or HTTP).
pub async fn accept(
    l4: &mut L4Stream,
    trusted: &TrustedProxies,
    deadline: Duration,
) -> Result<(), Refused> {
    let Some(peer) = peer_ip(l4) else {
        return Err(Refused::Closed);
    };
    let trusted = trusted.contains(peer);
    let mut buf = BytesMut::with_capacity(256);
    let parsed = tokio::time::timeout(deadline, read_header(l4, &mut buf, trusted)).await;
    let parsed = parsed.map_err(|_| Refused::Timeout(peer))?;
    if !trusted {
        if starts_header(&buf) {
            return Err(Refused::Untrusted(peer));
        }
        // An untrusted peer's bytes are its own: they go on as they came.
        l4.rewind(&buf);
        return Ok(());
    }
    match parsed {
        Parsed::Header(declared, len) => {
            l4.rewind(&buf[len..]);
            if let Declared::Client(client) = declared {
                set_peer(l4, client);
            }
            Ok(())
        }
        Parsed::Malformed(why) => Err(Refused::Malformed(peer, why)),
        Parsed::Absent => Err(Refused::Missing(peer)),
        Parsed::Incomplete if buf.is_empty() => Err(Refused::Closed),
        Parsed::Incomplete => Err(Refused::Malformed(peer, "cut short")),
    }
}

/// Reads until the bytes decide; from an untrusted peer, only until they show whether a
/// header starts.
async fn read_header(l4: &mut L4Stream, buf: &mut BytesMut, trusted: bool) -> Parsed {
    loop {
        let parsed = parse(buf);
        if parsed != Parsed::Incomplete || (!trusted && starts_header(buf)) {
            return parsed;
        }
        match l4.read_buf(buf).await {
            Ok(0) | Err(_) => return Parsed::Incomplete,
            Ok(_) => {}
        }
    }
}

/// Do the bytes start with a v1 or v2 signature?
fn starts_header(buf: &[u8]) -> bool {
    buf.starts_with(V1_PREFIX) || buf.starts_with(V2_SIGNATURE)
}

fn peer_ip(l4: &L4Stream) -> Option<IpAddr> {
    let digest = l4.get_socket_digest()?;
    Some(digest.peer_addr()?.as_inet()?.ip())
}

/// Makes `client` the address pingora and rproxy see as the connection's peer.
fn set_peer(l4: &mut L4Stream, client: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    // A fresh cell: it cannot be set already.
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
    l4.set_socket_digest(digest);
}

/// Parses the start of a connection.
fn parse(buf: &[u8]) -> Parsed {
    let prefix_of = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else if prefix_of(V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        Parsed::Incomplete
    } else {
        Parsed::Absent
    }
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return match buf.len() >= V1_MAX {
            true => Parsed::Malformed("v1 line longer than 107 bytes"),
            false => Parsed::Incomplete,
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Parsed::Malformed("v1 line is not text");
    };
    match v1_fields(line) {
        Some(declared) => Parsed::Header(declared, end + 2),
        None => Parsed::Malformed("v1 line is not PROXY TCP4|TCP6|UNKNOWN src dst sport dport"),
    }
}

fn v1_fields(line: &str) -> Option<Declared> {
    let mut fields = line.split(' ');
    let family = fields.next()?;
    if family == "UNKNOWN" {
        return Some(Declared::Peer);
    }
    let (src, _dst, sport, _dport) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() {
        return None;
    }
    let ip: IpAddr = match family {
        "TCP4" => src.parse::<Ipv4Addr>().ok()?.into(),
        "TCP6" => src.parse::<Ipv6Addr>().ok()?.into(),
        _ => return None,
    };
    Some(Declared::Client(SocketAddr::new(ip, sport.parse().ok()?)))
}

/// The binary header: signature, version and command, family, length, addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let (version, command, family) = (buf[12] >> 4, buf[12] & 0x0f, buf[13]);
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version != 2 {
        return Parsed::Malformed("v2 header of another version");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let body = &buf[V2_FIXED..len];
    let declared = match command {
        0 => Some(Declared::Peer),
        1 => v2_address(family, body),
        _ => return Parsed::Malformed("v2 header with an unknown command"),
    };
    match declared {
        Some(d) => Parsed::Header(d, len),
        None => Parsed::Malformed("v2 address block shorter than its family needs"),
    }
}

/// The source address of a v2 PROXY command; families other than TCP keep the peer.
fn v2_address(family: u8, body: &[u8]) -> Option<Declared> {
    let port = |at: usize| Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    match family {
        0x11 => {
            let ip: [u8; 4] = body.get(..4)?.try_into().ok()?;
            let addr = SocketAddr::new(Ipv4Addr::from(ip).into(), port(8)?);
            Some(Declared::Client(addr))
        }
        0x21 => {
            let ip: [u8; 16] = body.get(..16)?.try_into().ok()?;
            let addr = SocketAddr::new(Ipv6Addr::from(ip).into(), port(32)?);
            Some(Declared::Client(addr))
        }
        _ => Some(Declared::Peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([0x20 | command, family]);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    fn client(addr: &str) -> Declared {
        Declared::Client(addr.parse().unwrap())
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(line), Parsed::Header(client("192.0.2.1:56324"), 45));
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header(client("[2001:db8::1]:1"), line.len())
        );
        let line = b"PROXY UNKNOWN ffff::1 x y z\r\n";
        assert_eq!(parse(line), Parsed::Header(Declared::Peer, line.len()));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 1"), Parsed::Incomplete);
        assert_eq!(parse(b"PROX"), Parsed::Incomplete);
    }

    #[test]
    fn bad_v1_lines() {
        for line in [
            &b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 70000 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 \xff\r\n",
        ] {
            assert!(matches!(parse(line), Parsed::Malformed(_)), "{line:?}");
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
        assert!(matches!(parse(&long), Parsed::Malformed(_)));
    }

    #[test]
    fn v2_headers() {
        let body4 = [192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        let header = v2(1, 0x11, &body4);
        assert_eq!(
            parse(&header),
            Parsed::Header(client("192.0.2.1:56324"), 28)
        );
        // TLVs after the addresses are skipped with them.
        let mut with_tlv = body4.to_vec();
        with_tlv.extend([0x04, 0, 1, 0xff]);
        assert_eq!(
            parse(&v2(1, 0x11, &with_tlv)),
            Parsed::Header(client("192.0.2.1:56324"), 32)
        );
        let mut body6 = [0u8; 36];
        body6[..16].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        body6[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &body6)),
            Parsed::Header(client("[2001:db8::9]:443"), 52)
        );
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Header(Declared::Peer, 16));
        assert_eq!(parse(&header[..20]), Parsed::Incomplete);
        assert_eq!(parse(&header[..5]), Parsed::Incomplete);
    }

    #[test]
    fn bad_v2_headers() {
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Parsed::Malformed(_)
        ));
        assert!(matches!(
            parse(&v2(7, 0x11, &[0; 12])),
            Parsed::Malformed(_)
        ));
        let mut v3 = v2(1, 0x11, &[0; 12]);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Parsed::Malformed(_)));
    }

    #[test]
    fn other_starts_are_not_headers() {
        for start in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /",
            b"\x16\x03\x01",
            b"PRI * HTTP/2.0",
        ] {
            assert_eq!(parse(start), Parsed::Absent, "{start:?}");
        }
    }
}
