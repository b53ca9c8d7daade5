//! An HTTP/2 client on the `h2` crate, for tests that need control over frames: h2c with prior
//! knowledge on the plain listener or h2 over TLS (ALPN) on the https one, many streams on one
//! connection, each answer read whole (body and trailers) within a deadline.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::tls::{client_config, TestCert};
use super::wire::PIECE_GAP;
use super::Proxy;

/// How long one stream may take, from its HEADERS to its end, before the test fails.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection to the proxy; clones open streams on the same connection.
#[derive(Clone)]
pub struct H2 {
    send: SendRequest<Bytes>,
    /// `scheme://authority`, put before every path (it becomes `:scheme` and `:authority`).
    pub base: String,
}

/// A response as one HTTP/2 stream delivered it, to its END_STREAM.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

impl Got {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl H2 {
    /// h2c with prior knowledge on the plain listener; `:authority` is `127.0.0.1:<port>`.
    pub async fn h2c(proxy: &Proxy) -> H2 {
        let tcp = TcpStream::connect(proxy.http_addr())
            .await
            .expect("connect to the http listener");
        H2::handshake(tcp, format!("http://127.0.0.1:{}", proxy.http)).await
    }

    /// h2 over TLS on the https listener, with SNI and `:authority` the first name of `cert`
    /// (which the client trusts alone); panics unless ALPN picks h2.
    pub async fn tls(proxy: &Proxy, cert: &TestCert) -> H2 {
        let name = cert.names[0].clone();
        let connector = tokio_rustls::TlsConnector::from(client_config(&[cert], &[b"h2"]));
        let tcp = TcpStream::connect(proxy.https_addr())
            .await
            .expect("connect to the https listener");
        let server_name = ServerName::try_from(name.clone()).expect("a DNS name");
        let tls = connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN did not select h2"
        );
        let port = proxy.https_addr().port();
        H2::handshake(tls, format!("https://{name}:{port}")).await
    }

    pub async fn handshake<T>(io: T, base: String) -> H2
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { send, base }
    }

    /// The `:authority` of this connection's requests.
    pub fn authority(&self) -> &str {
        self.base.split_once("://").map_or("", |(_, a)| a)
    }

    /// A request builder for `path` on this connection's scheme and authority.
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
    }

    /// Sends `req` with its body in `pieces` (one DATA frame each, [`PIECE_GAP`] apart, the last
    /// with END_STREAM; none: END_STREAM on the HEADERS) and reads the whole answer. `Err` names
    /// a stream or connection error, or the deadline.
    pub async fn try_send(&self, req: Request<()>, pieces: &[&[u8]]) -> Result<Got, String> {
        let work = async {
            let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
            let (resp, mut stream) = send
                .send_request(req, pieces.is_empty())
                .map_err(|e| e.to_string())?;
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(PIECE_GAP).await;
                }
                let last = i + 1 == pieces.len();
                stream
                    .send_data(Bytes::copy_from_slice(piece), last)
                    .map_err(|e| e.to_string())?;
            }
            let (parts, mut body) = resp.await.map_err(|e| e.to_string())?.into_parts();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("{e} after {} body bytes", data.len()))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.map_err(|e| e.to_string())?;
            Ok(Got {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: data,
                trailers,
            })
        };
        tokio::time::timeout(STREAM_TIMEOUT, work)
            .await
            .map_err(|_| format!("no complete answer within {STREAM_TIMEOUT:?}"))?
    }

    /// [`H2::try_send`], panicking on an error.
    pub async fn send(&self, req: Request<()>, pieces: &[&[u8]]) -> Got {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req, pieces)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// A GET of `path` without a body.
    pub async fn get(&self, path: &str) -> Got {
        let req = self.request("GET", path).body(()).expect("request");
        self.send(req, &[]).await
    }
}
