//! Automatic certificates against a real ACME server (Pebble on loopback): issuance by HTTP-01
//! and TLS-ALPN-01, reuse of the stored certificate after a restart, renewal of short-lived
//! certificates without dropping connections, a CA that is down at start, and two replicas
//! sharing one certificate directory (one order in total, both serve the result).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::net::TcpStream;

use common::pebble::{Pebble, PebbleBuilder};
use common::tls::{handshake, handshake_with, roots_client_config, Handshake};
use common::whole::{start_whole_in, Ports};
use common::{wait_until, Proxy, Upstream};

/// The domain every test orders.
const DOMAIN: &str = "a.test";
/// Bound on a first issuance (Pebble without sleeps issues in a second or two).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate directory shared by the replicas of one test (outlives each proxy's temp dir).
fn certs_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("rproxy-certs")
        .tempdir()
        .expect("tempdir")
}

/// What goes under `tls.acme` besides the directory and CA.
struct Acme<'a> {
    challenge: &'a str,
    /// `domains:`; `None` leaves the default (the route hosts).
    domains: Option<&'a [&'a str]>,
}

const HTTP_01: Acme<'static> = Acme {
    challenge: "http-01",
    domains: None,
};

/// A `proxy.yaml` on `ports` with ACME against `directory` for the route host `a.test`.
fn acme_yaml(
    ports: &Ports,
    certs: &Path,
    directory: &str,
    ca: &Path,
    acme: &Acme<'_>,
    up: &Upstream,
) -> String {
    let mut yaml = format!(
        "server:\n  threads: 2\n  grace_period: 1s\n\
         listen:\n  http: \"127.0.0.1:{}\"\n  https: \"127.0.0.1:{}\"\n  admin: \"127.0.0.1:{}\"\n\
         tls:\n  certs: \"{}\"\n  acme:\n    email: ops@example.com\n    directory: \"{directory}\"\n    \
         ca: \"{}\"\n    challenge: {}\n",
        ports.http,
        ports.https,
        ports.admin,
        certs.display(),
        ca.display(),
        acme.challenge,
    );
    if let Some(domains) = acme.domains {
        yaml.push_str(&format!("    domains: [{}]\n", domains.join(", ")));
    }
    yaml.push_str(&format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - host: {DOMAIN}\n    path: /\n    upstream: app\n",
        up.host_port()
    ));
    yaml
}

/// Starts one rproxy replica on `ports` (its own temp dir for `proxy.yaml` and logs).
async fn start_replica(ports: &Ports, yaml: String) -> Proxy {
    let dir = tempfile::Builder::new()
        .prefix("rproxy-test")
        .tempdir()
        .expect("tempdir");
    start_whole_in(dir, ports, yaml).await
}

fn acme_file(certs: &Path, name: &str) -> PathBuf {
    certs.join("acme").join(name)
}

/// The chain stored for `domain` (`<certs>/acme/<domain>.crt`), leaf first; empty when absent.
fn stored_chain(certs: &Path, domain: &str) -> Vec<CertificateDer<'static>> {
    let Ok(pem) = std::fs::read(acme_file(certs, &format!("{domain}.crt"))) else {
        return Vec::new();
    };
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A handshake with SNI `a.test` that verifies the chain against `root` only.
async fn verified(proxy: &Proxy, root: &CertificateDer<'static>) -> Result<Handshake, String> {
    handshake_with(
        roots_client_config(std::slice::from_ref(root), &[]),
        proxy.https_addr(),
        DOMAIN,
    )
    .await
}

/// Polls until a handshake with `a.test` verifies against `root`; panics with both logs at the
/// deadline. Returns what the successful handshake showed.
async fn wait_issued(
    proxy: &Proxy,
    pebble: &Pebble,
    root: &CertificateDer<'static>,
    timeout: Duration,
) -> Handshake {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match verified(proxy, root).await {
            Ok(h) => return h,
            Err(e) => e,
        };
        assert!(
            proxy_alive(proxy),
            "rproxy died while waiting for the certificate\n{}",
            proxy.stderr()
        );
        if Instant::now() >= deadline {
            panic!(
                "no certificate from Pebble's root served for {DOMAIN} within {timeout:?} \
                 (last handshake: {last})\n--- rproxy stderr ---\n{}\n{}",
                proxy.stderr(),
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn proxy_alive(proxy: &Proxy) -> bool {
    // try_exit needs &mut; the port answering is what matters here.
    std::net::TcpStream::connect_timeout(&proxy.admin_addr(), Duration::from_secs(1)).is_ok()
}

/// `rproxy_acme_orders_total{domain="a.test",result=<result>}`, 0 while absent.
async fn orders(proxy: &Proxy, result: &str) -> f64 {
    proxy
        .metric(
            "rproxy_acme_orders_total",
            &[("domain", DOMAIN), ("result", result)],
        )
        .await
        .unwrap_or(0.0)
}

/// The leaf's serial number (hex) and `notAfter` (Unix seconds).
fn serial_and_expiry(der: &CertificateDer<'_>) -> (String, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parse leaf");
    (
        cert.tbs_certificate.raw_serial_as_string(),
        cert.validity().not_after.timestamp(),
    )
}

/// Issuance against a fresh Pebble, for the tests that start from an issued certificate:
/// returns Pebble, its root, the proxy and the time from starting rproxy to the first verified
/// handshake.
async fn issue(
    certs: &Path,
    up: &Upstream,
    validity: Option<Duration>,
) -> (Pebble, CertificateDer<'static>, Proxy, Duration) {
    let ports = Ports::free();
    let mut builder = PebbleBuilder::new().http_port(ports.http);
    if let Some(v) = validity {
        builder = builder.validity(v);
    }
    let pebble = builder.start().await;
    let root = pebble.root().await;
    let yaml = acme_yaml(
        &ports,
        certs,
        &pebble.directory(),
        &pebble.ca_path(),
        &HTTP_01,
        up,
    );
    let started = Instant::now();
    let proxy = start_replica(&ports, yaml).await;
    wait_issued(&proxy, &pebble, &root, ISSUE_TIMEOUT).await;
    let took = started.elapsed();
    (pebble, root, proxy, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_harness_starts_and_serves_a_directory() {
    let pebble = Pebble::start(common::free_port(), common::free_port()).await;
    let ca = std::fs::read(pebble.ca_path()).expect("ca.pem");
    let client = common::client_builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let dir = common::json_body(
        client
            .get(pebble.directory())
            .send()
            .await
            .expect("GET /dir"),
    )
    .await;
    assert!(dir["newOrder"].is_string(), "{dir}");
    let root = pebble.root().await;
    assert!(!root.as_ref().is_empty());
    assert_eq!(pebble.orders(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_a_certificate_that_verifies_against_the_ca() {
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let (pebble, root, proxy, took) = issue(certs.path(), &up, None).await;
    println!("issuance by http-01: {took:?} from rproxy start to a verified handshake");

    // The served chain is the stored one; the files are where and how they should be.
    let served = verified(&proxy, &root).await.expect("verified handshake");
    let stored = stored_chain(certs.path(), DOMAIN);
    assert!(!stored.is_empty(), "no {DOMAIN}.crt under <certs>/acme/");
    assert_eq!(
        served.chain, stored,
        "served chain differs from <certs>/acme/{DOMAIN}.crt"
    );
    for file in ["account.json", &format!("{DOMAIN}.key")] {
        let path = acme_file(certs.path(), file);
        assert_eq!(mode(&path), 0o600, "mode of {}", path.display());
    }
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());

    // A whole request through the issued certificate, trusting only Pebble's root.
    let client = common::client_builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(root.as_ref()).unwrap())
        .resolve(DOMAIN, proxy.https_addr())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://{DOMAIN}:{}/", proxy.https_addr().port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("https GET: {e}\n{}", proxy.stderr()));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "app");

    // Metrics: one good order; the expiry gauge carries the served leaf's notAfter.
    assert_eq!(orders(&proxy, "ok").await, 1.0, "{}", proxy.metrics().await);
    let (_, not_after) = serial_and_expiry(served.leaf());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            proxy
                .metrics_parsed()
                .await
                .find(
                    "rproxy_certificate_expiry_timestamp_seconds",
                    &[("domain", DOMAIN)],
                )
                .any(|s| (s.value - not_after as f64).abs() <= 1.0)
        })
        .await,
        "rproxy_certificate_expiry_timestamp_seconds{{domain=\"{DOMAIN}\"}} is not {not_after}\n{}",
        proxy.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_a_certificate_that_verifies_against_the_ca() {
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let ports = Ports::free();
    // HTTP-01 would go to a port where nothing listens: only TLS-ALPN-01 can succeed.
    let pebble = PebbleBuilder::new().tls_port(ports.https).start().await;
    let root = pebble.root().await;
    let acme = Acme {
        challenge: "tls-alpn-01",
        domains: Some(&[DOMAIN]),
    };
    let yaml = acme_yaml(
        &ports,
        certs.path(),
        &pebble.directory(),
        &pebble.ca_path(),
        &acme,
        &up,
    );
    let started = Instant::now();
    let proxy = start_replica(&ports, yaml).await;
    let served = wait_issued(&proxy, &pebble, &root, ISSUE_TIMEOUT).await;
    println!(
        "issuance by tls-alpn-01: {:?} from rproxy start to a verified handshake",
        started.elapsed()
    );
    assert_eq!(served.chain, stored_chain(certs.path(), DOMAIN));
    assert_eq!(orders(&proxy, "ok").await, 1.0, "{}", proxy.metrics().await);

    // Ordinary clients still negotiate h2 next to the acme-tls/1 answering.
    let h2 = handshake_with(
        roots_client_config(std::slice::from_ref(&root), &[b"h2", b"http/1.1"]),
        proxy.https_addr(),
        DOMAIN,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_serves_the_stored_certificate_without_a_new_order() {
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let (pebble, root, first, _) = issue(certs.path(), &up, None).await;
    let chain = stored_chain(certs.path(), DOMAIN);
    let account = std::fs::read(acme_file(certs.path(), "account.json")).expect("account.json");
    let orders_before = pebble.orders();

    // Graceful stop, then a new process on the same certificate directory.
    first.signal(libc::SIGTERM);
    let mut first = first;
    assert!(
        first.wait_exit(Duration::from_secs(10)).await.is_some(),
        "rproxy did not exit after SIGTERM\n{}",
        first.stderr()
    );
    let ports = Ports::free();
    let yaml = acme_yaml(
        &ports,
        certs.path(),
        &pebble.directory(),
        &pebble.ca_path(),
        &HTTP_01,
        &up,
    );
    let second = start_replica(&ports, yaml).await;

    // The very first handshake after /readyz already gets the stored chain.
    let served = verified(&second, &root)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", second.stderr()));
    assert_eq!(
        served.chain, chain,
        "the restarted proxy does not serve the stored chain byte for byte"
    );

    // And nothing is ordered: watch for a while (an order would show within a second or two).
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        assert_eq!(orders(&second, "ok").await, 0.0, "{}", second.stderr());
        assert_eq!(orders(&second, "error").await, 0.0, "{}", second.stderr());
        assert_eq!(
            pebble.orders(),
            orders_before,
            "Pebble saw a new order after the restart\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored_chain(certs.path(), DOMAIN), chain);
    assert_eq!(
        std::fs::read(acme_file(certs.path(), "account.json")).expect("account.json"),
        account,
        "account.json was rewritten"
    );
}

/// One HTTP/1.1 connection over TLS (SNI `a.test`, verified against a root), kept open for
/// several requests.
struct KeptConnection {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    leaf: CertificateDer<'static>,
}

impl KeptConnection {
    async fn open(proxy: &Proxy, config: Arc<ClientConfig>) -> Result<KeptConnection, String> {
        let tcp = TcpStream::connect(proxy.https_addr())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from(DOMAIN).expect("name"), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no server certificate")?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(KeptConnection { send, leaf })
    }

    /// `GET /` on this connection; the status and body.
    async fn get(&mut self) -> Result<(u16, String), String> {
        let req = hyper::Request::get("/")
            .header("host", DOMAIN)
            .body(Empty::new())
            .expect("request");
        let work = async {
            self.send
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .send
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .map_err(|_| "request timed out".to_string())?
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificate_is_renewed_without_dropping_connections() {
    const LIFETIME: Duration = Duration::from_secs(30);
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let (pebble, root, proxy, _) = issue(certs.path(), &up, Some(LIFETIME)).await;
    let issued_at = Instant::now();
    let config = roots_client_config(std::slice::from_ref(&root), &[b"http/1.1"]);

    let mut kept = KeptConnection::open(&proxy, config.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    let (first_serial, not_after) = serial_and_expiry(&kept.leaf);
    assert_eq!(kept.get().await, Ok((200, "app".to_string())));

    // Renewal is due when a third of the lifetime is left (~20 s in); allow the rest of the
    // lifetime plus a few seconds, using the kept connection every second meanwhile.
    let deadline = issued_at + LIFETIME + Duration::from_secs(5);
    let renewed = loop {
        let fresh = verified(&proxy, &root).await;
        if let Ok(h) = &fresh {
            let (serial, _) = serial_and_expiry(h.leaf());
            if serial != first_serial {
                break h.leaf().clone();
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "serial still {first_serial} {:?} after issuance (notAfter {not_after}, \
                 last handshake {:?})\n--- rproxy stderr ---\n{}\n{}",
                issued_at.elapsed(),
                fresh.err(),
                proxy.stderr(),
                pebble.log()
            );
        }
        let before = kept.get().await;
        assert_eq!(
            before,
            Ok((200, "app".to_string())),
            "the kept connection failed before renewal\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(900)).await;
    };
    println!(
        "renewal: new serial served {:?} after the first issuance (lifetime {LIFETIME:?})",
        issued_at.elapsed()
    );

    // The connection opened before the renewal still works, on its old certificate.
    assert_eq!(
        kept.get().await,
        Ok((200, "app".to_string())),
        "the connection opened before the renewal broke\n{}",
        proxy.stderr()
    );
    assert_eq!(serial_and_expiry(&kept.leaf).0, first_serial);
    assert_eq!(
        stored_chain(certs.path(), DOMAIN).first(),
        Some(&renewed),
        "the renewed certificate is not the stored one"
    );
    assert!(proxy_alive(&proxy));
    assert_eq!(orders(&proxy, "ok").await, 2.0, "{}", proxy.metrics().await);
    assert_eq!(pebble.issued(), 2, "{}", pebble.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_down_at_start_falls_back_then_issues_with_backoff() {
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let ports = Ports::free();
    let setup = PebbleBuilder::new().http_port(ports.http);
    let yaml = acme_yaml(
        &ports,
        certs.path(),
        &setup.directory(),
        &setup.ca_path(),
        &HTTP_01,
        &up,
    );
    // start_whole_in waits for /readyz = 200 although the CA is unreachable.
    let proxy = start_replica(&ports, yaml).await;

    // HTTPS is up with the fallback certificate.
    let fallback = handshake(proxy.https_addr(), DOMAIN, &[])
        .await
        .unwrap_or_else(|e| panic!("no https while the CA is down: {e}\n{}", proxy.stderr()));
    assert!(!fallback.chain.is_empty());
    assert!(stored_chain(certs.path(), DOMAIN).is_empty());

    // Failures are counted and backed off: the 1st and 3rd failure are >= 1 s + 2 s apart.
    let errors_at_least = |n: f64| {
        let proxy = &proxy;
        move || async move { orders(proxy, "error").await >= n }
    };
    assert!(
        wait_until(Duration::from_secs(10), errors_at_least(1.0)).await,
        "no failed order counted while the CA is down\n{}\n{}",
        proxy.metrics().await,
        proxy.stderr()
    );
    let first_error = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), errors_at_least(3.0)).await,
        "fewer than 3 failed orders counted in 15 s while the CA is down\n{}",
        proxy.stderr()
    );
    let gap = first_error.elapsed();
    assert!(
        gap >= Duration::from_millis(2500),
        "3 failures within {gap:?}: no exponential backoff (1 s, then 2 s)\n{}",
        proxy.stderr()
    );
    assert_eq!(orders(&proxy, "ok").await, 0.0);
    let ready = common::client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .expect("/readyz");
    assert_eq!(ready.status().as_u16(), 200);

    // The CA comes up on the configured port: the next retry (4 s after the 3rd failure at
    // most, then 8 s) gets the real certificate.
    let pebble = setup.start().await;
    let up_at = Instant::now();
    let root = pebble.root().await;
    let served = wait_issued(&proxy, &pebble, &root, Duration::from_secs(20)).await;
    println!(
        "issuance after the CA came up: {:?} (3rd failure was {gap:?} after the 1st)",
        up_at.elapsed()
    );
    assert_ne!(served.leaf(), fallback.leaf());
    assert_eq!(orders(&proxy, "ok").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_order_validated_by_the_other() {
    let up = Upstream::named("app").await;
    let certs = certs_dir();
    let a_ports = Ports::free();
    let b_ports = Ports::free();
    // Pebble validates HTTP-01 against B; A places the order.
    let pebble = PebbleBuilder::new().http_port(b_ports.http).start().await;
    let root = pebble.root().await;
    let yaml = |ports: &Ports| {
        acme_yaml(
            ports,
            certs.path(),
            &pebble.directory(),
            &pebble.ca_path(),
            &HTTP_01,
            &up,
        )
    };
    let started = Instant::now();
    let a = start_replica(&a_ports, yaml(&a_ports)).await;
    let lock = acme_file(certs.path(), &format!("locks/{DOMAIN}.lock"));
    assert!(
        wait_until(Duration::from_secs(10), || async { lock.exists() }).await,
        "replica A did not take {} within 10 s\n{}",
        lock.display(),
        a.stderr()
    );
    let b = start_replica(&b_ports, yaml(&b_ports)).await;

    let on_a = wait_issued(&a, &pebble, &root, ISSUE_TIMEOUT).await;
    let on_b = wait_issued(&b, &pebble, &root, Duration::from_secs(5)).await;
    println!(
        "issuance with two replicas (validated by B): {:?} from starting A to both serving",
        started.elapsed()
    );
    let stored = stored_chain(certs.path(), DOMAIN);
    assert_eq!(
        on_a.chain, stored,
        "replica A serves another chain than the stored one"
    );
    assert_eq!(
        on_b.chain, stored,
        "replica B serves another chain than the stored one"
    );

    let (a_ok, b_ok) = (orders(&a, "ok").await, orders(&b, "ok").await);
    assert_eq!(
        a_ok + b_ok,
        1.0,
        "ok orders: A {a_ok}, B {b_ok}\n--- A ---\n{}\n--- B ---\n{}",
        a.stderr(),
        b.stderr()
    );
    assert_eq!(
        b_ok,
        0.0,
        "replica B ordered although A held the lock\n--- B ---\n{}",
        b.stderr()
    );
    assert_eq!(orders(&b, "error").await, 0.0, "B attempted an order");
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
}
