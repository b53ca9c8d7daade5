//! The client's real address behind load balancers: PROXY protocol v1 and v2 headers on
//! listeners with `proxy_protocol: true`, from trusted and untrusted peers, whole and malformed;
//! and X-Forwarded-For believed from `server.trusted_proxies` only (nginx's `real_ip`). Trusted
//! and untrusted peers are told apart by the source address: 127.0.0.1 is trusted, 127.0.0.2 is
//! not (Linux routes all of 127/8 to loopback).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::h2client::H2;
use common::tls::insecure_client_config;
use common::{wait_until, Proxy, Upstream};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TRUSTED: &str = "127.0.0.1";
const UNTRUSTED: &str = "127.0.0.2";

async fn proxy_behind_balancer(up: &Upstream, proxy_protocol: bool) -> Proxy {
    let mut builder = Proxy::builder()
        .https()
        .server("trusted_proxies: [127.0.0.1/32, \"10.0.0.0/8\"]");
    if proxy_protocol {
        builder = builder.proxy_protocol();
    }
    builder
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - path: /\n    upstream: app\n  - path: /limited\n    upstream: app\n    rate_limit: 1/m\n",
            up.host_port()
        ))
        .start()
        .await
}

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{src}:0").parse().expect("source address"))
        .expect("bind the source address");
    socket.connect(to).await.expect("connect")
}

/// Writes `preamble` and one HTTP/1.1 request for `path` (with `headers`), and returns all the
/// connection gave back before it closed.
async fn exchange<S>(mut s: S, preamble: &[u8], path: &str, headers: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n");
    if s.write_all(&[preamble, request.as_bytes()].concat())
        .await
        .is_err()
    {
        return String::new();
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no answer and no close within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// The echo upstream's account of the request in `response`.
fn seen(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not an echo answer: {response}"))
}

fn header(seen: &Value, name: &str) -> String {
    let values = seen["headers"][name]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
    values.join(", ")
}

/// A v2 PROXY header for a TCP/IPv4 client.
fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([0x21, 0x11, 0, 12]);
    out.extend(client);
    out.extend([127, 0, 0, 1]);
    out.extend(port.to_be_bytes());
    out.extend(443u16.to_be_bytes());
    out
}

fn v2_ipv6_header(client: std::net::Ipv6Addr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([0x21, 0x21, 0, 36]);
    out.extend(client.octets());
    out.extend(std::net::Ipv6Addr::LOCALHOST.octets());
    out.extend([0x30, 0x39, 0x01, 0xbb]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_balancers_proxy_header_names_the_client() {
    let up = Upstream::echo("echo").await;
    let proxy = proxy_behind_balancer(&up, true).await;
    let addr = proxy.http_addr();

    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n";
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, v1, "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), "203.0.113.9", "{got}");
    assert_eq!(header(&got, "x-forwarded-for"), "203.0.113.9", "{got}");

    let v2 = v2_header([198, 51, 100, 20], 50000);
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, &v2, "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), "198.51.100.20", "{got}");

    let v6 = v2_ipv6_header("2001:db8::42".parse().unwrap());
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, &v6, "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), "2001:db8::42", "{got}");

    // A client's own X-Forwarded-For behind the balancer is appended to, not believed.
    let forged = "X-Forwarded-For: 6.6.6.6\r\n";
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, v1, "/", forged).await);
    assert_eq!(
        header(&got, "x-forwarded-for"),
        "6.6.6.6, 203.0.113.9",
        "{got}"
    );
    assert_eq!(header(&got, "x-real-ip"), "203.0.113.9", "{got}");

    // v1 UNKNOWN and v2 LOCAL (a balancer's own health check) keep the connection's address.
    let unknown = b"PROXY UNKNOWN\r\n";
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, unknown, "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), TRUSTED, "{got}");
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, local, "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), TRUSTED, "{got}");

    // The access log names the client too.
    let logged = wait_until(Duration::from_secs(5), || async {
        let log = proxy.stderr();
        log.contains("access client=203.0.113.9 ") && log.contains("access client=2001:db8::42 ")
    })
    .await;
    assert!(logged, "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_over_tls_and_http2() {
    let up = Upstream::echo("echo").await;
    let proxy = proxy_behind_balancer(&up, true).await;
    let name = ServerName::try_from("app.test").unwrap();

    // HTTP/1.1 over TLS: the header comes before the handshake.
    let tcp = connect_from(TRUSTED, proxy.https_addr()).await;
    let mut tcp = tcp;
    tcp.write_all(&v2_header([192, 0, 2, 77], 1234))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(insecure_client_config(&[b"http/1.1"]));
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("TLS handshake");
    let got = seen(&exchange(tls, b"", "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), "192.0.2.77", "{got}");
    assert_eq!(header(&got, "x-forwarded-proto"), "https", "{got}");

    // HTTP/2 over TLS, two streams on the connection.
    let mut tcp = connect_from(TRUSTED, proxy.https_addr()).await;
    tcp.write_all(b"PROXY TCP4 192.0.2.78 127.0.0.1 1 443\r\n")
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(insecure_client_config(&[b"h2"]));
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let port = proxy.https_addr().port();
    let h2 = H2::handshake(tls, format!("https://app.test:{port}")).await;
    for _ in 0..2 {
        let got = h2.get("/").await;
        assert_eq!(got.status, 200, "{}", got.text());
        let got: Value = serde_json::from_slice(&got.body).expect("echo answer");
        assert_eq!(header(&got, "x-real-ip"), "192.0.2.78", "{got}");
    }

    // h2c on the plain listener: the header comes before the preface.
    let mut tcp = connect_from(TRUSTED, proxy.http_addr()).await;
    tcp.write_all(b"PROXY TCP4 192.0.2.79 127.0.0.1 1 80\r\n")
        .await
        .unwrap();
    let h2 = H2::handshake(tcp, format!("http://127.0.0.1:{}", proxy.http)).await;
    let got = h2.get("/").await;
    let got: Value = serde_json::from_slice(&got.body).expect("echo answer");
    assert_eq!(header(&got, "x-real-ip"), "192.0.2.79", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_and_untrusted_headers_close_the_connection() {
    let up = Upstream::echo("echo").await;
    let proxy = proxy_behind_balancer(&up, true).await;
    let addr = proxy.http_addr();
    let closed = [
        (TRUSTED, &b""[..], "no header from a trusted peer"),
        (
            TRUSTED,
            b"PROXY TCP4 999.0.0.1 127.0.0.1 1 80\r\n",
            "a bad v1 address",
        ),
        (
            TRUSTED,
            b"PROXY TCP4 192.0.2.1 127.0.0.1 1\r\n",
            "a v1 line short of a field",
        ),
        (
            TRUSTED,
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04",
            "a short v2 block",
        ),
        (
            TRUSTED,
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x00",
            "a v2 header of version 3",
        ),
        (
            UNTRUSTED,
            b"PROXY TCP4 192.0.2.1 127.0.0.1 1 80\r\n",
            "v1 from an untrusted peer",
        ),
    ];
    for (src, preamble, what) in closed {
        let got = exchange(connect_from(src, addr).await, preamble, "/", "").await;
        assert!(got.is_empty(), "{what}: the connection was served: {got}");
    }
    let untrusted_v2 = v2_header([192, 0, 2, 1], 1);
    let got = exchange(connect_from(UNTRUSTED, addr).await, &untrusted_v2, "/", "").await;
    assert!(
        got.is_empty(),
        "v2 from an untrusted peer was served: {got}"
    );

    // Over TLS, a trusted peer without a header gets no handshake.
    let tcp = connect_from(TRUSTED, proxy.https_addr()).await;
    let connector = tokio_rustls::TlsConnector::from(insecure_client_config(&[b"http/1.1"]));
    let name = ServerName::try_from("app.test").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());

    // An untrusted peer that sends no header is served as the client it is.
    let got = seen(&exchange(connect_from(UNTRUSTED, addr).await, b"", "/", "").await);
    assert_eq!(header(&got, "x-real-ip"), UNTRUSTED, "{got}");
    let errors = proxy.stderr();
    assert!(errors.contains("not in server.trusted_proxies"), "{errors}");
    assert!(
        errors.contains("no PROXY protocol header from trusted peer"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
    let up = Upstream::echo("echo").await;
    let proxy = proxy_behind_balancer(&up, false).await;
    let addr = proxy.http_addr();
    // A chain through two trusted hops: the first untrusted address from the right is the
    // client; the forged entry left of it is not.
    let chain = "X-Forwarded-For: 6.6.6.6, 203.0.113.5\r\nX-Forwarded-For: 10.1.2.3\r\n";
    let got = seen(&exchange(connect_from(TRUSTED, addr).await, b"", "/", chain).await);
    assert_eq!(header(&got, "x-real-ip"), "203.0.113.5", "{got}");
    assert_eq!(
        header(&got, "x-forwarded-for"),
        "6.6.6.6, 203.0.113.5, 10.1.2.3, 127.0.0.1",
        "{got}"
    );
    let got = seen(&exchange(connect_from(UNTRUSTED, addr).await, b"", "/", chain).await);
    assert_eq!(header(&got, "x-real-ip"), UNTRUSTED, "{got}");
    assert_eq!(
        header(&got, "x-forwarded-for"),
        "6.6.6.6, 203.0.113.5, 10.1.2.3, 127.0.0.2",
        "{got}"
    );

    // rate_limit counts the real client: behind the trusted proxy, two clients have a budget
    // each. (1/m: a second request in the same minute is refused; a window that turns between
    // the two may let it pass, so the pair is tried three times.)
    let status = |response: String| response.split(' ').nth(1).unwrap_or("").to_string();
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let mut limited = false;
    for i in 0..3 {
        let client = from(&format!("192.0.2.{}", 10 + i));
        let one = exchange(connect_from(TRUSTED, addr).await, b"", "/limited", &client).await;
        let again = exchange(connect_from(TRUSTED, addr).await, b"", "/limited", &client).await;
        assert_eq!(status(one), "200");
        if status(again) == "429" {
            limited = true;
            break;
        }
    }
    assert!(limited, "one client behind the proxy was never limited");
    let other = exchange(
        connect_from(TRUSTED, addr).await,
        b"",
        "/limited",
        &from("192.0.2.2"),
    )
    .await;
    assert_eq!(
        status(other),
        "200",
        "another client behind the same proxy was limited"
    );
}
