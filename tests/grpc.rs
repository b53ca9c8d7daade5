//! gRPC through rproxy to a Python grpcio service over h2c: unary, server streaming, client
//! streaming and bidirectional calls with their trailers, from a grpcio client over h2c and
//! over TLS (ALPN h2); the calls rproxy fails answered with gRPC statuses (UNAVAILABLE with the
//! server stopped, DEADLINE_EXCEEDED past the pool's read timeout, UNIMPLEMENTED without a
//! route), and every call counted by its status in `rproxy_grpc_responses_total`; `grpc.health.v1` probes gating traffic (`health: { grpc: true }`); and a load run
//! through a service that closes each connection after 300 ms with gRPC's graceful GOAWAY
//! (`max_connection_age`), with no call failed.

mod common;

use std::time::Duration;

use common::python_apps::{repo_dir, require_python_deps, PyApp};
use common::tls::TestCert;
use common::{dead_addr, wait_until, Proxy};
use serde_json::Value;

/// The grpcio service of `tests/apps/grpc_echo.py`, listening.
async fn service(extra: &[&str]) -> PyApp {
    require_python_deps();
    let mut args = vec!["grpc_echo.py", "{port}"];
    args.extend_from_slice(extra);
    let mut app = PyApp::spawn(&repo_dir("tests/apps"), &args);
    app.wait_listening().await;
    app
}

/// What `tests/apps/grpc_call.py` printed for `args`.
async fn call(args: &[&str]) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg("grpc_call.py")
        .args(args)
        .current_dir(repo_dir("tests/apps"))
        .output()
        .await
        .expect("run the grpcio client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "grpcio client {args:?} printed no JSON: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// rproxy with https (certificate `cert`) and an h2c pool `echo` of `servers`, probed with
/// gRPC health checks, routed at `/test.Echo`.
async fn proxy(cert: &TestCert, servers: &str, extra_pool: &str) -> Proxy {
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "grpc");
    builder
        .yaml(&format!(
            "upstreams:\n  echo:\n    servers: [{servers}]\n    protocol: h2c\n    health: {{ grpc: true, interval: 300ms }}\n{extra_pool}\
             routes:\n  - {{ name: echo, path: /test.Echo, upstream: echo }}\n"
        ))
        .start()
        .await
}

fn assert_every_call_kind(got: &Value, how: &str) {
    assert_eq!(got["unary"], "echo:hi", "{how}: {got}");
    assert_eq!(got["unary_trailer"], "unary", "{how}: the trailer: {got}");
    let parts: Vec<String> = (0..4).map(|i| format!("part-{i}")).collect();
    assert_eq!(
        got["server_stream"],
        serde_json::json!(parts),
        "{how}: {got}"
    );
    assert_eq!(got["client_stream"], "a+b+c", "{how}: {got}");
    assert_eq!(
        got["bidi"],
        serde_json::json!(["echo:x", "echo:y"]),
        "{how}: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_call_over_h2c_and_tls() {
    let svc = service(&[]).await;
    let cert = TestCert::new(&["grpc.test"]);
    let proxy = proxy(&cert, &format!("127.0.0.1:{}", svc.port), "").await;
    let ca = proxy.dir().join("certs/grpc.crt").display().to_string();
    let h2c = proxy.http_addr().to_string();
    let tls = proxy.https_addr().to_string();
    // The client's own deadline (5 s) outlasts the slow call (3 s): it completes.
    let plain = call(&[&h2c, "--deadline", "5"]).await;
    assert_every_call_kind(&plain, "h2c");
    assert_eq!(plain["slow"], "OK", "{plain}");
    let secure = call(&[&tls, &ca, "grpc.test", "--deadline", "5"]).await;
    assert_every_call_kind(&secure, "TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_rproxy_fails_get_grpc_statuses() {
    let svc = service(&[]).await;
    let cert = TestCert::new(&["grpc.test"]);
    let slow_pool = format!(
        "  slowpool:\n    servers: [127.0.0.1:{}]\n    protocol: h2c\n    read_timeout: 500ms\n\
         \x20 gone:\n    servers: [{}]\n    protocol: h2c\n    retries: 0\n",
        svc.port,
        dead_addr()
    );
    let builder = Proxy::builder().https();
    cert.write(&builder.dir().join("certs"), "grpc");
    let proxy = builder
        .yaml(&format!(
            "upstreams:\n{slow_pool}routes:\n  - {{ path: /test.Echo, upstream: slowpool }}\n  - {{ path: /gone.Echo, upstream: gone }}\n"
        ))
        .start()
        .await;
    let h2c = proxy.http_addr().to_string();
    // Past the pool's read timeout (500 ms), well within the client's deadline (5 s).
    let got = call(&[&h2c, "--deadline", "5"]).await;
    assert_eq!(got["slow"], "DEADLINE_EXCEEDED", "{got}");
    assert_eq!(
        got["slow_details"], "upstream timed out",
        "rproxy's status: {got}"
    );

    let script = "import grpc,json,sys\nch=grpc.insecure_channel(sys.argv[1])\nout={}\n\
                  for p in sys.argv[2:]:\n    try:\n        ch.unary_unary(p)(b'x',timeout=5); out[p]='OK'\n    \
                  except grpc.RpcError as e:\n        out[p]=[e.code().name,e.details()]\nprint(json.dumps(out))\n";
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &h2c, "/gone.Echo/Unary", "/nope.Echo/Unary"])
        .output()
        .await
        .expect("python3");
    let got: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(got["/gone.Echo/Unary"][0], "UNAVAILABLE", "{got}");
    assert_eq!(got["/nope.Echo/Unary"][0], "UNIMPLEMENTED", "{got}");

    // Every call is counted by its gRPC status, the upstream's or rproxy's own, though all
    // were HTTP 200.
    let expected = [
        ("slowpool", "0", 4.0),
        ("slowpool", "4", 1.0),
        ("gone", "14", 1.0),
        ("", "12", 1.0),
    ];
    let counted = || async {
        let m = proxy.metrics_parsed().await;
        expected.iter().all(|(upstream, code, n)| {
            let labels = [("upstream", *upstream), ("grpc_status", *code)];
            m.value("rproxy_grpc_responses_total", &labels) == Some(*n)
        })
    };
    assert!(
        wait_until(Duration::from_secs(3), counted).await,
        "rproxy_grpc_responses_total is not {expected:?}:\n{}",
        proxy.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_probes_gate_traffic() {
    let serving = service(&[]).await;
    let not_serving = service(&["--not-serving"]).await;
    let cert = TestCert::new(&["grpc.test"]);
    let servers = format!("127.0.0.1:{}, 127.0.0.1:{}", serving.port, not_serving.port);
    let proxy = proxy(&cert, &servers, "").await;
    let healthy = wait_until(Duration::from_secs(10), || async {
        proxy
            .metric(
                "rproxy_upstream_healthy",
                &[
                    ("upstream", "echo"),
                    ("server", &format!("127.0.0.1:{}", serving.port)),
                ],
            )
            .await
            == Some(1.0)
    })
    .await;
    assert!(
        healthy,
        "the SERVING server never passed its probe\n{}",
        proxy.stderr()
    );
    let h2c = proxy.http_addr().to_string();
    for _ in 0..6 {
        assert_eq!(call(&[&h2c, "--only-unary"]).await["unary"], "OK");
    }
    let out = proxy
        .metric(
            "rproxy_upstream_healthy",
            &[
                ("upstream", "echo"),
                ("server", &format!("127.0.0.1:{}", not_serving.port)),
            ],
        )
        .await;
    assert_eq!(out, Some(0.0), "the NOT_SERVING server passed its probe");
    let served = proxy
        .metric(
            "rproxy_upstream_requests_total",
            &[
                ("upstream", "echo"),
                ("server", &format!("127.0.0.1:{}", not_serving.port)),
            ],
        )
        .await;
    assert_eq!(served, None, "the NOT_SERVING server got calls");
    let to_serving = proxy
        .metric(
            "rproxy_upstream_requests_total",
            &[
                ("upstream", "echo"),
                ("server", &format!("127.0.0.1:{}", serving.port)),
            ],
        )
        .await;
    assert_eq!(to_serving, Some(6.0), "every call to the SERVING server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaways_in_the_middle_of_a_load_run_fail_no_call() {
    // The service closes every connection after 300 ms with gRPC's graceful GOAWAY.
    let svc = service(&["--max-age", "300"]).await;
    let cert = TestCert::new(&["grpc.test"]);
    let proxy = proxy(&cert, &format!("127.0.0.1:{}", svc.port), "").await;
    let h2c = proxy.http_addr().to_string();
    let started = std::time::Instant::now();
    let got = call(&[&h2c, "--load", "2000"]).await;
    let took = started.elapsed();
    assert_eq!(
        got["codes"],
        serde_json::json!({ "OK": 2000 }),
        "{}",
        proxy.stderr()
    );
    // Connections that lived 300 ms each carried the run: the GOAWAYs came in its middle.
    let connections = got["connections"].as_u64().expect("connections");
    assert!(
        connections >= 3,
        "{connections} upstream connections in {took:?}: too few to have met GOAWAYs"
    );
}
