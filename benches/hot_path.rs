//! The rest of the per-request hot path and the reload path: the fast path's head work (parse
//! the request, write it upstream, parse the response, write it back), pingora's path's
//! upstream request head, upstream selection per algorithm, compiling 1,000 routes, and
//! compressing a response.

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use rproxy::config::{load_str, Loaded};
use rproxy::proxy::headers::{upstream_request, Client};
use rproxy::request::client::ClientAddr;
use rproxy::request::compress::Verdict;
use rproxy::request::Listener;
use rproxy::routing::{Route, Target};
use rproxy::upstream::SelectKey;

fn loaded(yaml: &str) -> Loaded {
    let config = load_str(yaml, "bench.yaml", &|_| None).expect("bench config parses");
    Loaded {
        config,
        path: PathBuf::from("bench.yaml"),
        dir: PathBuf::from("."),
        source: Default::default(),
    }
}

fn header_rewrite(c: &mut Criterion) {
    let route = Route::new("r".into(), "/", Target::Static(PathBuf::from(".")));
    let client = Client {
        addr: Some(ClientAddr::direct("192.0.2.7".parse().expect("ip"))),
        listener: Listener::Https,
        request_id: b"0123456789abcdef0123456789abcdef",
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
    c.bench_function("pingora's path: upstream request head", |b| {
        b.iter(|| upstream_request(black_box(&template), &client, &route))
    });
}

/// What the fast path does to the heads of one proxied HTTP/1.1 request, as wrk sends it and
/// the benchmark's nginx upstream answers it.
fn fast_path_heads(c: &mut Criterion) {
    use rproxy::fast::head::{self, Added, Client, Parsed};
    let route = Route::new("r".into(), "/", Target::Static(PathBuf::from(".")));
    let request: &[u8] = b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: app.example.com\r\n\
        User-Agent: Mozilla/5.0\r\nAccept: application/json\r\nConnection: keep-alive\r\n\
        X-Forwarded-For: 10.0.0.1\r\nCookie: session=abc123\r\n\r\n";
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
        Date: Tue, 01 Dec 2026 22:00:00 GMT\r\nContent-Type: application/json\r\n\
        Content-Length: 89\r\nConnection: keep-alive\r\n\r\n";
    let client = Client {
        addr: ClientAddr::direct("192.0.2.7".parse().expect("ip")),
        proto: "http",
        request_id: b"0123456789abcdef0123456789abcdef",
    };
    let added = Added {
        keep_alive: true,
        request_id: client.request_id,
        hsts: None,
        date: b"Tue, 01 Dec 2026 22:00:00 GMT",
        set_cookie: None,
    };
    let mut out = Vec::with_capacity(1024);
    c.bench_function("fast path: request head parse + upstream head", |b| {
        b.iter(|| {
            let mut storage = head::storage();
            let Parsed::Complete(req) = head::parse_request(black_box(request), &mut storage)
            else {
                panic!("bench request parses");
            };
            out.clear();
            head::write_upstream_request(&mut out, &req, req.target, &client, &route);
            out.len()
        })
    });
    c.bench_function("fast path: response head parse + client head", |b| {
        b.iter(|| {
            let mut storage = head::storage();
            let resp = head::parse_response(black_box(response), &mut storage)
                .expect("bench response parses")
                .expect("complete");
            out.clear();
            head::write_client_response(&mut out, &resp, &added, Verdict::Untouched);
            out.len()
        })
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
            sticky: None,
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

/// Compressing one 8.6 KiB JSON response (the `gzip-N` load point's body) whole, per
/// encoding; and making a gzip encoder alone, which rproxy does once per compressed response.
fn compression(c: &mut Criterion) {
    use rproxy::request::compress::{Encoder, Encoding};
    let item = r#"{"id":12345,"name":"widget","tags":["a","b","c"],"price":19.99,"stock":true},"#;
    let body: Vec<u8> = item.bytes().cycle().take(8800).collect();
    let mut out = Vec::with_capacity(16 << 10);
    for e in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
        for (known, length) in [
            ("length known", Some(body.len() as u64)),
            ("no length", None),
        ] {
            let name = format!("compress 8.6 KiB JSON, {}, {known}", e.token());
            c.bench_function(&name, |b| {
                b.iter(|| {
                    let mut enc = Encoder::new(e, length).expect("encoder");
                    enc.feed(black_box(&body), true, &mut out).expect("encode");
                    out.len()
                })
            });
        }
    }
    c.bench_function("make a gzip encoder", |b| {
        b.iter(|| Encoder::new(black_box(Encoding::Gzip), None).is_ok())
    });
}

criterion_group!(
    benches,
    fast_path_heads,
    header_rewrite,
    selection,
    compile_1000,
    compression
);
criterion_main!(benches);
