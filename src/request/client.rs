//! Who the client of a request is. It is the connection's peer (its socket address, or the
//! address a trusted load balancer declared in a PROXY protocol header), unless that peer is one
//! of `server.trusted_proxies`: then it is the address those proxies vouch for in
//! X-Forwarded-For, read right to left past every trusted hop (nginx's `set_real_ip_from` with
//! `real_ip_header X-Forwarded-For` and `real_ip_recursive on`). An X-Forwarded-For from any
//! other peer is appended to, never believed.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::lines::{Kind, Lines};

/// The peers whose word about the client is taken (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of `server.trusted_proxies` that is neither an address nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an address or a CIDR like 10.0.0.0/8 or fd00::/8")]
pub struct BadCidr(pub String);

impl TrustedProxies {
    /// Parses addresses (`10.1.2.3`, `::1`) and CIDRs (`10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, BadCidr> {
        let net = |s: &str| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadCidr(s.to_string()))
        };
        let nets = entries.iter().map(|s| net(s.as_ref().trim()));
        nets.collect::<Result<_, _>>().map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is `ip` a trusted proxy? (An IPv4-mapped IPv6 address counts as its IPv4 address.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The two addresses a forwarded request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client, as far as trusted proxies say: X-Real-IP, `ip_hash`, `rate_limit` and the
    /// access log use it.
    pub ip: IpAddr,
    /// The connection's peer: appended to X-Forwarded-For, so the chain stays whole.
    pub peer: IpAddr,
}

impl ClientAddr {
    /// A client that connected directly.
    pub fn direct(peer: IpAddr) -> ClientAddr {
        ClientAddr { ip: peer, peer }
    }
}

/// The client of a request from `peer` with the header `lines`.
pub fn client_of<L: Lines + ?Sized>(
    peer: IpAddr,
    lines: &L,
    trusted: &TrustedProxies,
) -> ClientAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return ClientAddr::direct(peer);
    }
    let mut hops: Vec<&[u8]> = Vec::new();
    lines.each(|k, _, value| {
        if k == Kind::XForwardedFor {
            hops.extend(value.split(|&b| b == b','));
        }
    });
    let mut ip = peer;
    for hop in hops.iter().rev() {
        // A hop that is not an address ends the walk at the last trusted one.
        let Some(hop) = hop_ip(hop) else { break };
        ip = hop;
        if !trusted.contains(hop) {
            break;
        }
    }
    ClientAddr { ip, peer }
}

/// One X-Forwarded-For entry: `192.0.2.1`, `2001:db8::1`, or with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`), as some balancers write them.
fn hop_ip(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&'static str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", http::HeaderValue::from_static(v));
        }
        map
    }

    fn client(peer: &str, values: &[&'static str], trusted: &[&str]) -> String {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        let c = client_of(peer.parse().unwrap(), &xff(values), &trusted);
        assert_eq!(c.peer, peer.parse::<IpAddr>().unwrap());
        c.ip.to_string()
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_not_believed() {
        assert_eq!(client("192.0.2.9", &["1.1.1.1"], &[]), "192.0.2.9");
        assert_eq!(
            client("192.0.2.9", &["1.1.1.1"], &["10.0.0.0/8"]),
            "192.0.2.9"
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let trusted = ["10.0.0.0/8", "192.168.1.1"];
        // A client forged the left entry; the balancer's own entry is the one believed.
        let chain = ["6.6.6.6, 203.0.113.5", "10.2.3.4"];
        assert_eq!(client("10.0.0.1", &chain, &trusted), "203.0.113.5");
        assert_eq!(
            client("192.168.1.1", &["203.0.113.5"], &trusted),
            "203.0.113.5"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            client("10.0.0.1", &["10.9.9.9, 10.8.8.8"], &trusted),
            "10.9.9.9"
        );
        // No header: the peer.
        assert_eq!(client("10.0.0.1", &[], &trusted), "10.0.0.1");
    }

    #[test]
    fn a_hop_that_is_not_an_address_ends_the_walk() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &["unknown, 10.1.1.1"], &trusted),
            "10.1.1.1"
        );
        assert_eq!(
            client("10.0.0.1", &["1.2.3.4, garbage"], &trusted),
            "10.0.0.1"
        );
    }

    #[test]
    fn hops_with_ports_brackets_and_ipv6() {
        let trusted = ["fd00::/8", "10.0.0.0/8"];
        assert_eq!(
            client("fd00::1", &["[2001:db8::7]:443"], &trusted),
            "2001:db8::7"
        );
        assert_eq!(client("fd00::1", &["2001:db8::7"], &trusted), "2001:db8::7");
        assert_eq!(
            client("10.0.0.1", &["198.51.100.4:5555"], &trusted),
            "198.51.100.4"
        );
        // An IPv4-mapped peer counts as its IPv4 address.
        assert_eq!(
            client("::ffff:10.0.0.1", &["198.51.100.4"], &trusted),
            "198.51.100.4"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(err.0, "10.0.0.0/33");
        assert!(TrustedProxies::parse(&["example.com"]).is_err());
        assert!(TrustedProxies::parse(&["::1", "0.0.0.0/0"]).is_ok());
    }
}
