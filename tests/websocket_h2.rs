//! WebSocket over HTTP/2 (RFC 8441) through rproxy, against the real uvicorn/FastAPI echo app
//! (`examples/fastapi`), with the Python `h2` + `wsproto` client `tests/apps/ws_h2_client.py`:
//! the SETTINGS_ENABLE_CONNECT_PROTOCOL advertisement, echoes over TLS (ALPN h2) and h2c, an
//! upstream refusal relayed, refused CONNECTs, a tunnel that outlives reloads, the idle
//! timeout, and graceful shutdown.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::python_apps::{repo_dir, require_python_deps, PyApp};
use common::tls::TestCert;
use common::whole::start_whole;
use common::{wait_until, Proxy};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);

/// The FastAPI example app (its `/ws` echoes every message) under uvicorn.
async fn echo_app() -> PyApp {
    require_python_deps();
    let mut app = PyApp::uvicorn(&repo_dir("examples/fastapi"), "app:app");
    app.wait_healthy().await;
    app
}

/// Routes: `/nows` with `websocket: false`, everything else (route `app`) to the app.
fn yaml(app: &PyApp, idle: &str) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - name: nows\n    path: /nows\n    \
         upstream: app\n    websocket: false\n  - name: app\n    path: /\n    upstream: app\n    \
         websocket_idle_timeout: {idle}\n",
        app.addr()
    )
}

/// One `ws_h2_client.py` process: one HTTP/2 connection to rproxy.
struct H2Ws {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl H2Ws {
    async fn h2c(proxy: &Proxy) -> H2Ws {
        H2Ws::spawn(&["--port", &proxy.http.to_string()])
    }

    /// TLS with ALPN h2; `cafile` holds the certificate of `name` rproxy serves.
    async fn tls(proxy: &Proxy, cafile: &str, name: &str) -> H2Ws {
        let port = proxy.https_addr().port().to_string();
        H2Ws::spawn(&["--port", &port, "--tls", cafile, "--name", name])
    }

    fn spawn(args: &[&str]) -> H2Ws {
        let script = repo_dir("tests/apps/ws_h2_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 ws_h2_client.py");
        let stdin = child.stdin.take().expect("client stdin");
        let stdout = child.stdout.take().expect("client stdout");
        H2Ws {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Sends one command line; returns the client's JSON answer.
    async fn cmd(&mut self, line: &str) -> Value {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("client gone before {line:?}: {e}"));
        let answer = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await;
        match answer {
            Ok(Ok(Some(text))) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{line:?}: not JSON ({e}): {text}")),
            other => {
                let _ = self.child.start_kill();
                panic!("{line:?}: no answer from the client: {other:?}")
            }
        }
    }

    /// `open PATH`: the status the extended CONNECT got (0 for a reset), and the answer.
    async fn open(&mut self, path: &str) -> (u64, Value) {
        let got = self.cmd(&format!("open {path}")).await;
        (got["status"].as_u64().unwrap_or(0), got)
    }

    /// `open /ws`, which must succeed (`200`); returns the answer.
    async fn open_ws(&mut self, proxy: &Proxy) -> Value {
        let (status, got) = self.open("/ws").await;
        assert_eq!(status, 200, "{got}\n--- stderr ---\n{}", proxy.stderr());
        got
    }

    /// `n` echoes on the open WebSocket; panics with rproxy's log unless all come back.
    async fn echo(&mut self, n: usize, tag: &str, proxy: &Proxy) {
        let got = self.cmd(&format!("echo {n} {tag}")).await;
        assert_eq!(
            got["echoed"].as_u64(),
            Some(n as u64),
            "{tag}: {got}\n--- stderr ---\n{}",
            proxy.stderr()
        );
    }
}

async fn gauge(proxy: &Proxy, route: &str) -> Option<f64> {
    proxy
        .metric("rproxy_websocket_connections", &[("route", route)])
        .await
}

async fn wait_gauge(proxy: &Proxy, route: &str, want: f64) -> bool {
    wait_until(WAIT, || async { gauge(proxy, route).await == Some(want) }).await
}

#[tokio::test]
async fn echo_over_tls_h2_and_h2c() {
    let app = echo_app().await;
    let cert = TestCert::new(&["a.test"]);
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "a");
    let cafile = builder.dir().join("certs/a.crt").display().to_string();
    let proxy = builder.yaml(&yaml(&app, "1h")).start().await;

    let mut tls = H2Ws::tls(&proxy, &cafile, "a.test").await;
    let settings = tls.cmd("settings").await;
    assert_eq!(
        settings["enable_connect_protocol"].as_u64(),
        Some(1),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL over TLS: {settings}"
    );
    let got = tls.open_ws(&proxy).await;
    for name in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(got["headers"].get(name).is_none(), "{name} in {got}");
    }
    assert!(got["headers"].get("x-request-id").is_some(), "{got}");
    tls.echo(100, "tls", &proxy).await;
    assert!(
        wait_gauge(&proxy, "app", 1.0).await,
        "an open h2 WebSocket is counted: {:?}",
        gauge(&proxy, "app").await
    );
    let closed = tls.cmd("close").await;
    assert_eq!(closed["closed"].as_u64(), Some(1000), "{closed}");
    assert!(
        wait_gauge(&proxy, "app", 0.0).await,
        "a closed h2 WebSocket is no longer counted: {:?}",
        gauge(&proxy, "app").await
    );

    let mut h2c = H2Ws::h2c(&proxy).await;
    let settings = h2c.cmd("settings").await;
    assert_eq!(
        settings["enable_connect_protocol"].as_u64(),
        Some(1),
        "h2c: {settings}"
    );
    h2c.open_ws(&proxy).await;
    h2c.echo(100, "h2c", &proxy).await;
    // A second WebSocket on the same connection, beside the first.
    h2c.open_ws(&proxy).await;
    h2c.echo(10, "second", &proxy).await;
}

#[tokio::test]
async fn refusals_are_answers_not_resets() {
    let app = echo_app().await;
    let proxy = Proxy::start(&yaml(&app, "1h")).await;
    let mut c = H2Ws::h2c(&proxy).await;

    // The app refuses a WebSocket on a path that has none (Starlette answers 403).
    let (status, got) = c.open("/api/hello").await;
    assert_eq!(status, 403, "the upstream's refusal is relayed: {got}");
    // `websocket: false`: refused like an HTTP/1.1 upgrade there never becomes a tunnel.
    let (status, got) = c.open("/nows/ws").await;
    assert_eq!(status, 405, "websocket: false: {got}");
    let got = c.cmd("connect example.com:443").await;
    assert_eq!(got["status"].as_u64(), Some(405), "plain CONNECT: {got}");
    let got = c.cmd("protocol connect-udp /ws").await;
    assert_eq!(
        got["status"].as_u64(),
        Some(400),
        "another :protocol: {got}"
    );

    // The connection lived through all of it.
    c.open_ws(&proxy).await;
    c.echo(3, "after", &proxy).await;

    // CONNECT reaches rproxy's own rules now; over HTTP/1.1 it stays refused.
    let h1 = common::raw_request(
        proxy.http_addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(common::raw_status(&h1), 405, "HTTP/1.1 CONNECT: {h1}");
}

#[tokio::test]
async fn an_open_tunnel_outlives_reloads() {
    let app = echo_app().await;
    let mut proxy = Proxy::start(&yaml(&app, "1h")).await;
    let mut c = H2Ws::h2c(&proxy).await;
    c.open_ws(&proxy).await;
    c.echo(50, "before", &proxy).await;

    // A rewrite that replaces the route table (a new route, the idle timeout changed).
    let before = proxy.reloads("ok").await;
    let rewritten =
        proxy.yaml.replace("1h", "30m") + "  - name: more\n    path: /more\n    upstream: app\n";
    proxy.rewrite(&rewritten);
    assert!(
        proxy.wait_reloads_above("ok", before, WAIT).await,
        "the rewrite was not reloaded\n{}",
        proxy.stderr()
    );
    c.echo(50, "after-rewrite", &proxy).await;

    let before = proxy.reloads("ok").await;
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_reloads_above("ok", before, WAIT).await,
        "SIGHUP reload"
    );
    c.echo(10, "after-sighup", &proxy).await;
    assert_eq!(gauge(&proxy, "app").await, Some(1.0), "still counted once");
}

#[tokio::test]
async fn idle_timeout_closes_a_quiet_tunnel() {
    let app = echo_app().await;
    let proxy = Proxy::start(&yaml(&app, "1s")).await;
    let mut c = H2Ws::h2c(&proxy).await;
    c.open_ws(&proxy).await;

    // Traffic every 0.4 s keeps it open past the idle timeout.
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(2500) {
        c.echo(1, "busy", &proxy).await;
        let got = c.cmd("wait 0.4").await;
        assert_eq!(got["event"], "timeout", "a busy tunnel was closed: {got}");
    }

    // Then quiet: closed about 1 s after the last message (the stream ends or is reset).
    c.echo(1, "last", &proxy).await;
    let quiet = Instant::now();
    let got = c.cmd("wait 10").await;
    let took = quiet.elapsed();
    assert!(
        got["event"] == "ended" || got["event"] == "reset",
        "a quiet tunnel was not closed: {got}\n{}",
        proxy.stderr()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}, not after websocket_idle_timeout (1 s)"
    );
    assert!(
        wait_gauge(&proxy, "app", 0.0).await,
        "the closed tunnel is still counted"
    );
    // The connection itself serves on.
    c.open_ws(&proxy).await;
    c.echo(2, "again", &proxy).await;
}

/// Graceful shutdown treats an HTTP/2 tunnel as it treats an HTTP/1.1 one: it keeps echoing
/// while rproxy drains, and rproxy exits once it is closed, before the grace period is out.
#[tokio::test]
async fn an_open_tunnel_is_drained_on_sigterm() {
    const GRACE: Duration = Duration::from_secs(6);
    let app = echo_app().await;
    let engine = match std::env::var("RPROXY_TEST_ENGINE").as_deref() {
        Ok("pingora") => "  fast_path: false\n",
        _ => "",
    };
    let body = yaml(&app, "1h");
    let mut proxy = start_whole(
        |_| {},
        |p| {
            format!(
                "server:\n  threads: 2\n  grace_period: {}s\n{engine}listen:\n  http: \
                 \"127.0.0.1:{}\"\n  admin: \"127.0.0.1:{}\"\n{body}",
                GRACE.as_secs(),
                p.http,
                p.admin
            )
        },
    )
    .await;
    let mut c = H2Ws::h2c(&proxy).await;
    c.open_ws(&proxy).await;
    c.echo(2, "before", &proxy).await;

    proxy.signal(libc::SIGTERM);
    let signalled = Instant::now();
    for i in 0..5 {
        let _ = c.cmd("wait 0.25").await;
        c.echo(1, &format!("draining-{i}"), &proxy).await;
    }
    assert!(
        proxy.try_exit().is_none(),
        "rproxy exited while an h2 WebSocket was open"
    );
    let closed = c.cmd("close").await;
    assert_eq!(closed["closed"].as_u64(), Some(1000), "{closed}");
    let status = proxy
        .wait_exit(GRACE + Duration::from_secs(6))
        .await
        .unwrap_or_else(|| panic!("rproxy still running after the tunnel closed"));
    assert!(status.success(), "exit status {status}\n{}", proxy.stderr());
    let took = signalled.elapsed();
    assert!(
        took < GRACE,
        "exit took {took:?}: the closed tunnel should end the drain before the grace period"
    );
}
