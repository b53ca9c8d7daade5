//! Every oversize upload gets its 413, whatever the protocol and the body's framing, on both
//! engines: the table of issue #12 run with curl (the client a user tries first) over TLS, ten
//! tries a row, against a real uvicorn app, which must never see a cut body as complete. The
//! 413s are logged at INFO by the access log, with no ERROR line; an HTTP/2 connection keeps
//! serving its other streams after a 413 on one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::h2client::H2;
use common::python_apps::{repo_dir, require_python_deps, PyApp};
use common::{client, Proxy};

/// (name, `server.fast_path`).
const ENGINES: [(&str, bool); 2] = [("fast", true), ("pingora", false)];
const TRIES: usize = 10;
const MIB: usize = 1 << 20;

/// One row of the table: how curl sends the body, and how big it is.
struct Row {
    name: &'static str,
    args: &'static [&'static str],
    size: usize,
}

const ROWS: [Row; 7] = [
    Row {
        name: "HTTP/1.1, Content-Length",
        args: &["--http1.1", "-H", "Expect:"],
        size: 2 * MIB,
    },
    Row {
        name: "HTTP/1.1, Content-Length, 16 MiB",
        args: &["--http1.1", "-H", "Expect:"],
        size: 16 * MIB,
    },
    Row {
        name: "HTTP/1.1, chunked",
        args: &[
            "--http1.1",
            "-H",
            "Expect:",
            "-H",
            "Transfer-Encoding: chunked",
        ],
        size: 2 * MIB,
    },
    Row {
        name: "HTTP/1.1, chunked + Expect: 100-continue",
        args: &[
            "--http1.1",
            "-H",
            "Expect: 100-continue",
            "-H",
            "Transfer-Encoding: chunked",
        ],
        size: 2 * MIB,
    },
    Row {
        name: "HTTP/1.1, Content-Length + Expect: 100-continue",
        args: &["--http1.1", "-H", "Expect: 100-continue"],
        size: 2 * MIB,
    },
    Row {
        name: "HTTP/2, content-length",
        args: &["--http2"],
        size: 2 * MIB,
    },
    // curl sends no content-length on HTTP/2 when told the body is chunked.
    Row {
        name: "HTTP/2, no content-length (streamed)",
        args: &["--http2", "-H", "Transfer-Encoding: chunked"],
        size: 2 * MIB,
    },
];

/// The watching app (`tests/apps/watch.py`), healthy.
async fn app() -> PyApp {
    require_python_deps();
    let mut app = PyApp::uvicorn(&repo_dir("tests/apps"), "watch:app");
    app.wait_healthy().await;
    app
}

/// rproxy on `engine` with https, a 1 MiB `max_body` in front of `app`.
async fn proxy(fast: bool, app: &PyApp) -> Proxy {
    Proxy::builder()
        .server(&format!("fast_path: {fast}"))
        .https()
        .yaml(&format!(
            "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ path: /, upstream: app, max_body: 1MiB }}\n",
            app.addr()
        ))
        .start()
        .await
}

/// What curl got: the status it printed and its exit code (`413/0` is a 413 read whole).
async fn curl(args: &[&str], body: &Path, url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args(args)
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .await
        .expect("run curl (apt-get install curl)");
    format!(
        "{}/{}",
        String::from_utf8_lossy(&out.stdout),
        out.status.code().unwrap_or(-1)
    )
}

/// What the app recorded of the request tagged `tag`.
async fn seen(app: &PyApp, tag: &str) -> serde_json::Value {
    let resp = client()
        .get(app.url(&format!("/seen?tag={tag}")))
        .send()
        .await
        .expect("ask the app what it saw");
    common::json_body(resp).await
}

fn body_file(dir: &Path, size: usize) -> std::path::PathBuf {
    let path = dir.join(format!("body-{size}"));
    if !path.exists() {
        std::fs::write(&path, vec![b'x'; size]).expect("write the body file");
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_oversize_upload_gets_413_on_both_engines() {
    let app = app().await;
    let files = tempfile::tempdir().expect("temp dir");
    for (engine, fast) in ENGINES {
        let proxy = proxy(fast, &app).await;
        let mut failures = Vec::new();
        for (r, row) in ROWS.iter().enumerate() {
            let body = body_file(files.path(), row.size);
            let mut got = Vec::new();
            for i in 0..TRIES {
                let tag = format!("{engine}-{r}-{i}");
                let url = format!(
                    "https://127.0.0.1:{}/upload?tag={tag}",
                    proxy.https_addr().port()
                );
                got.push(curl(row.args, &body, &url).await);
                let saw = seen(&app, &tag).await;
                assert_ne!(
                    saw["complete"], true,
                    "{engine}, {}: the app got a body over max_body whole: {saw}",
                    row.name
                );
            }
            println!("{engine:8} {:48} {}", row.name, got.join(" "));
            if got.iter().any(|g| g != "413/0") {
                failures.push(format!("{}: {}", row.name, got.join(" ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{engine}: not every oversize upload read its 413 (status/curl exit):\n{}\n{}",
            failures.join("\n"),
            proxy.stderr()
        );
        let log = proxy.stderr();
        let logged = log
            .lines()
            .filter(|l| l.contains("rproxy::access") && l.contains("status=413"))
            .filter(|l| l.contains(" INFO "))
            .count();
        assert_eq!(logged, ROWS.len() * TRIES, "{engine}: 413s at INFO\n{log}");
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .filter(|l| ["413", "max_body", "/upload"].iter().any(|w| l.contains(w)))
            .collect();
        assert!(errors.is_empty(), "{engine}: ERROR lines: {errors:#?}");
    }
}

/// A 413 on one HTTP/2 stream (with a declared length, or none) leaves the connection up: the
/// next request on it is answered.
#[tokio::test]
async fn an_h2_connection_serves_other_streams_after_a_413() {
    let app = app().await;
    let big = vec![b'x'; 2 * MIB];
    for (engine, fast) in ENGINES {
        let proxy = proxy(fast, &app).await;
        let h2 = H2::h2c(&proxy).await;
        for declared in [true, false] {
            let mut req = h2.request("POST", "/upload?tag=h2");
            if declared {
                req = req.header("content-length", big.len());
            }
            let req = req.body(()).expect("request");
            let got = h2
                .try_send(req, &[&big[..MIB], &big[MIB..]])
                .await
                .unwrap_or_else(|e| panic!("{engine}: oversize upload: {e}\n{}", proxy.stderr()));
            assert_eq!(
                got.status,
                413,
                "{engine}, declared {declared}: {}",
                got.text()
            );
            let after = tokio::time::timeout(Duration::from_secs(10), h2.get("/health"))
                .await
                .unwrap_or_else(|_| panic!("{engine}: no answer after the 413"));
            assert_eq!(after.status, 200, "{engine}: the stream after a 413");
        }
    }
}
