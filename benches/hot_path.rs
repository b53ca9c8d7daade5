//! The rest of the per-request hot path and the reload path: forwarded-header rewriting,
//! upstream selection per algorithm, and compiling a configuration of 1,000 routes.

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use rproxy::config::{load_str, Loaded};
use rproxy::proxy::headers::{rewrite_request, ClientInfo};
use rproxy::routing::{Route, Target};
use rproxy::upstream::SelectKey;

fn loaded(yaml: &str) -> Loaded {
    let config = load_str(yaml, "bench.yaml", &|_| None).expect("bench config parses");
    Loaded {
        config,
        path: PathBuf::from("bench.yaml"),
        dir: PathBuf::from("."),
    }
}

fn header_rewrite(c: &mut Criterion) {
    let route = Route::new("r".into(), "/", Target::Static(PathBuf::from(".")));
    let host = http::HeaderValue::from_static("app.example.com");
    let client = ClientInfo {
        ip: Some("192.0.2.7".parse().expect("ip")),
        proto: "https",
        host: Some(&host),
        upgrade: false,
    };
    let mut template = RequestHeader::build("GET", b"/api/users/42?x=1", None).expect("request");
    for (k, v) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0"),
        ("accept", "application/json"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "10.0.0.1"),
        ("cookie", "session=abc123"),
    ] {
        template.append_header(k, v).expect("header");
    }
    c.bench_function("forwarded headers rewrite", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| rewrite_request(&mut req, black_box(&client), &route).map(|_| req),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn selection(c: &mut Criterion) {
    for balance in [
        "round_robin",
        "weighted",
        "least_conn",
        "ip_hash",
        "consistent_hash",
        "random",
    ] {
        let servers: Vec<String> = (0..10)
            .map(|i| {
                format!(
                    "{{ addr: \"127.0.0.1:{}\", weight: {} }}",
                    9000 + i,
                    1 + i % 3
                )
            })
            .collect();
        let yaml = format!(
            "listen: {{ http: \"127.0.0.1:1\" }}\nupstreams:\n  app:\n    balance: {balance}\n    servers: [{}]\nroutes:\n  - {{ path: /, upstream: app }}\n",
            servers.join(", ")
        );
        let compiled = rproxy::compile(&loaded(&yaml), None).expect("compiles");
        let pool = compiled.runtime.pools["app"].clone();
        let key = SelectKey {
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            uri: "/api/users/42",
        };
        c.bench_function(&format!("select {balance} (10 servers)"), |b| {
            b.iter(|| pool.select(black_box(&key), &[]))
        });
    }
}

fn compile_1000(c: &mut Criterion) {
    let mut yaml = String::from("listen: { http: \"127.0.0.1:1\" }\nupstreams:\n  app:\n    servers: [127.0.0.1:9000, 127.0.0.1:9001]\nroutes:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - {{ host: h{}.example.com, path: /api/v{}, upstream: app }}\n",
            i / 4,
            i % 4
        ));
    }
    let parsed = loaded(&yaml);
    c.bench_function("compile 1,000 routes", |b| {
        b.iter(|| rproxy::compile(black_box(&parsed), None).map(|c| c.runtime.pools.len()))
    });
    c.bench_function("load + compile 1,000 routes", |b| {
        b.iter(|| rproxy::compile(&loaded(black_box(&yaml)), None).map(|c| c.runtime.pools.len()))
    });
}

criterion_group!(benches, header_rewrite, selection, compile_1000);
criterion_main!(benches);
