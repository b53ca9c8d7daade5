//! Route matching (exact host > wildcard > any host, longest whole-segment prefix, fallback to
//! the next host level), `strip_prefix`, 404 for no route, and static file routes.

mod common;

use common::{client, json_body, raw_status, Proxy, Upstream};

/// Upstreams named after the route that should win; one pool per upstream.
struct Routed {
    proxy: Proxy,
    _ups: Vec<Upstream>,
}

async fn routed() -> Routed {
    let names = [
        "exact_root",
        "exact_api",
        "wild_root",
        "wild_only",
        "narrow_only",
        "any_root",
        "any_deep",
        "lone_only",
    ];
    let mut ups = Vec::new();
    let mut yaml = String::from("upstreams:\n");
    for n in names {
        let u = Upstream::named(n).await;
        yaml.push_str(&format!("  {n}:\n    servers: [{}]\n", u.host_port()));
        ups.push(u);
    }
    yaml.push_str(
        r#"routes:
  - { path: /, upstream: any_root }
  - { path: /deep/er, upstream: any_deep }
  - { host: "*.example.com", path: /, upstream: wild_root }
  - { host: "*.example.com", path: /only, upstream: wild_only }
  - { host: app.example.com, path: /, upstream: exact_root }
  - { host: app.example.com, path: /api, upstream: exact_api }
  - { host: narrow.example.com, path: /only, upstream: narrow_only }
  - { host: lone.test, path: /only, upstream: lone_only }
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    Routed { proxy, _ups: ups }
}

async fn served_by(proxy: &Proxy, host: &str, path: &str) -> String {
    let resp = proxy.get_host(host, path).await;
    assert_eq!(resp.status().as_u16(), 200, "{host}{path}");
    resp.headers()
        .get("x-server")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_specificity_and_longest_prefix() {
    let r = routed().await;
    let p = &r.proxy;
    let cases = [
        // exact host beats wildcard and any
        ("app.example.com", "/", "exact_root"),
        ("app.example.com", "/other/page", "exact_root"),
        // host matching ignores port and case
        ("APP.Example.COM:8080", "/", "exact_root"),
        ("app.example.com:443", "/api/x", "exact_api"),
        // whole-segment prefixes
        ("app.example.com", "/api", "exact_api"),
        ("app.example.com", "/api/", "exact_api"),
        ("app.example.com", "/api/users?x=1", "exact_api"),
        ("app.example.com", "/api?x=1", "exact_api"),
        ("app.example.com", "/apix", "exact_root"),
        ("app.example.com", "/ap", "exact_root"),
        // wildcard beats any
        ("www.example.com", "/", "wild_root"),
        ("www.example.com", "/only/x", "wild_only"),
        ("www.example.com", "/onlyx", "wild_root"),
        // no host route matches: any
        ("example.org", "/", "any_root"),
        ("example.org", "/deep/er/still", "any_deep"),
        ("example.org", "/deep/era", "any_root"),
        ("example.org", "/deep", "any_root"),
        // exact host with no matching path falls back to the wildcard level ...
        ("narrow.example.com", "/only/x", "narrow_only"),
        ("narrow.example.com", "/elsewhere", "wild_root"),
        // ... and to the any-host level when there is no wildcard.
        ("lone.test", "/only", "lone_only"),
        ("lone.test", "/elsewhere", "any_root"),
        ("lone.test", "/deep/er", "any_deep"),
    ];
    let mut wrong = Vec::new();
    for (host, path, want) in cases {
        let got = served_by(p, host, path).await;
        if got != want {
            wrong.push(format!("{host}{path}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404() {
    let u = Upstream::named("app").await;
    let proxy = Proxy::start(&format!(
        r#"upstreams:
  app:
    servers: [{}]
routes:
  - {{ host: app.example.com, path: /, upstream: app }}
  - {{ path: /api, upstream: app }}
"#,
        u.host_port()
    ))
    .await;

    assert_eq!(proxy.get_host("app.example.com", "/x").await.status(), 200);
    assert_eq!(proxy.get_host("other.test", "/api/v1").await.status(), 200);
    for (host, path) in [
        ("other.test", "/"),
        ("other.test", "/apix"),
        ("other.test", "/x/api"),
    ] {
        let resp = proxy.get_host(host, path).await;
        assert_eq!(resp.status().as_u16(), 404, "{host}{path}");
        let body = resp.text().await.unwrap();
        assert!(body.len() < 512, "short error body: {body}");
    }
    assert_eq!(u.requests(), 2, "the 404s never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_rewrites_the_upstream_path() {
    let stripped = Upstream::echo("stripped").await;
    let kept = Upstream::echo("kept").await;
    let proxy = Proxy::start(&format!(
        r#"upstreams:
  stripped:
    servers: [{}]
  kept:
    servers: [{}]
routes:
  - {{ path: /api, upstream: stripped, strip_prefix: true }}
  - {{ path: /keep, upstream: kept }}
"#,
        stripped.host_port(),
        kept.host_port()
    ))
    .await;

    let cases = [
        ("/api/users?x=1", "stripped", "/users?x=1"),
        ("/api", "stripped", "/"),
        ("/api/", "stripped", "/"),
        ("/api?q=2", "stripped", "/?q=2"),
        ("/api/a/b/c", "stripped", "/a/b/c"),
        ("/keep/users?x=1", "kept", "/keep/users?x=1"),
        ("/keep", "kept", "/keep"),
    ];
    for (path, who, want) in cases {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let seen = json_body(resp).await;
        assert_eq!(seen["server"], who, "{path}");
        assert_eq!(seen["uri"], want, "{path} upstream uri");
    }
}

// ---------------------------------------------------------------------------------------------
// Static routes
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "TOP-SECRET-CONTENT";

async fn static_proxy() -> Proxy {
    let builder = Proxy::builder()
        .file("site/index.html", "<h1>home</h1>")
        .file("site/app.css", "body { color: red }")
        .file("site/data.json", "{\"a\":1}")
        .file("site/sub/index.html", "<h1>sub</h1>")
        .file("site/sub/page.txt", "plain text")
        .file("secret.txt", SECRET)
        .file("sitex/leak.txt", SECRET);
    std::os::unix::fs::symlink(
        builder.dir().join("secret.txt"),
        builder.dir().join("site/link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(builder.dir(), builder.dir().join("site/rootlink")).unwrap();
    builder
        .yaml("routes:\n  - { path: /static, static: ./site }\n")
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_headers() {
    let proxy = static_proxy().await;

    let resp = proxy.get("/static/app.css").await;
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    let ctype = h["content-type"].to_str().unwrap();
    assert!(ctype.starts_with("text/css"), "content-type {ctype}");
    assert_eq!(h["content-length"], "19");
    assert!(h.contains_key("last-modified"), "{h:?}");
    assert!(
        httpdate::parse_http_date(h["last-modified"].to_str().unwrap()).is_ok(),
        "Last-Modified is an HTTP date: {:?}",
        h["last-modified"]
    );
    assert!(h.contains_key("etag"), "{h:?}");
    assert_eq!(resp.text().await.unwrap(), "body { color: red }");

    let resp = proxy.get("/static/data.json").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    let resp = proxy.get("/static/sub/page.txt").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "plain text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_directories_serve_index_html() {
    let proxy = static_proxy().await;

    for (path, body) in [
        ("/static/", "<h1>home</h1>"),
        ("/static/sub/", "<h1>sub</h1>"),
    ] {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(resp.text().await.unwrap(), body, "{path}");
    }

    // Without the trailing slash: the index, or a redirect to the slash form (as nginx does).
    for (path, body) in [
        ("/static", "<h1>home</h1>"),
        ("/static/sub", "<h1>sub</h1>"),
    ] {
        let resp = proxy.get(path).await;
        let status = resp.status().as_u16();
        match status {
            200 => assert_eq!(resp.text().await.unwrap(), body, "{path}"),
            301 | 302 | 307 | 308 => {
                let loc = resp.headers()["location"].to_str().unwrap();
                assert!(loc.ends_with(&format!("{path}/")), "{path} -> {loc}");
            }
            other => panic!("{path}: status {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_conditional_and_head() {
    let proxy = static_proxy().await;
    let c = client();

    let resp = proxy.get("/static/app.css").await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();

    let resp = c
        .get(proxy.url("/static/app.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(resp.bytes().await.unwrap().len(), 0);

    let resp = c
        .get(proxy.url("/static/app.css"))
        .header("if-none-match", "\"some-other-tag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a different ETag gets the file"
    );

    // HEAD: same headers, no body (raw, so a body cannot hide behind the client).
    let raw = proxy
        .raw(b"HEAD /static/app.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("content-length: 19"), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.is_empty(), "HEAD has no body: {raw}");

    let resp = proxy.get("/static/missing.txt").await;
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_never_serves_outside_its_directory() {
    let proxy = static_proxy().await;
    let attempts: &[&str] = &[
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/sub/../../secret.txt",
        "/static/sub/%2e%2e/%2e%2e/secret.txt",
        "/static/..%5csecret.txt",
        "/static/link.txt",
        "/static/rootlink/secret.txt",
        "/static/../sitex/leak.txt",
        "/static%2f..%2fsecret.txt",
    ];
    let mut leaks = Vec::new();
    for path in attempts {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = proxy.raw(req.as_bytes()).await;
        let status = raw_status(&resp);
        if resp.contains(SECRET) || !(status == 403 || status == 404) {
            leaks.push(format!("{path}: status {status}\n{resp}"));
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n---\n"));

    // `/staticx` is not under the `/static` prefix.
    let resp = proxy.get("/staticx/app.css").await;
    assert_eq!(resp.status().as_u16(), 404);
}
