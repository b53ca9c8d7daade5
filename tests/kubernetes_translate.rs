//! Kubernetes objects -> rproxy configuration, table-driven from manifests in
//! `tests/fixtures/kubernetes/`: each `NAME.yaml` translates to exactly the routes, pools,
//! certificates and problems in `NAME.expected` (`RPROXY_BLESS=1` rewrites those files; review
//! the diff). Every translation must then compile (`routing::compile`) and route as expected.

use std::path::Path;

use rproxy::config::{load_str, Loaded};
use rproxy::kubernetes::{translate, Options, Snapshot, Translated};
use rproxy::routing::compile::compile_with_certs;
use rproxy::routing::Target;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kubernetes");

/// The base configuration (`-c`): listeners and one route of its own.
const BASE: &str = r#"
listen:
  http: "127.0.0.1:1"
  https: "127.0.0.1:2"
upstreams:
  static-site:
    servers: [127.0.0.1:3]
routes:
  - { host: base.example.com, path: /, upstream: static-site }
"#;

fn base(dir: &Path) -> Loaded {
    let config = load_str(BASE, "base.yaml", &|_| None).expect("base parses");
    Loaded {
        config,
        path: dir.join("base.yaml"),
        dir: dir.to_path_buf(),
        source: Default::default(),
    }
}

fn run(name: &str, dir: &Path) -> Translated {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}.yaml: {e}"));
    let snapshot = Snapshot::from_yaml(&text).unwrap_or_else(|e| panic!("{name}.yaml: {e}"));
    translate(&snapshot, &Options::default(), &base(dir))
}

/// One line per route, pool, certificate and problem, in a stable order; only what the
/// cluster added (the base's own pool and route are left out) and only non-default settings.
fn summary(t: &Translated) -> String {
    let c = &t.loaded.config;
    let mut out = Vec::new();
    for r in c.routes.iter().skip(1) {
        let mut line = format!(
            "route {} {}{} -> {}",
            r.host.as_deref().unwrap_or("*"),
            r.path,
            if r.exact { " (exact)" } else { "" },
            r.upstream.as_deref().unwrap_or("?")
        );
        if r.strip_prefix {
            line += " strip_prefix";
        }
        if r.max_body.0 != 10 << 20 {
            line += &format!(" max_body={}", r.max_body.0);
        }
        if let Some(rate) = &r.rate_limit {
            line += &format!(" rate_limit={rate}");
        }
        if let Some(redirect) = r.redirect_https {
            line += &format!(" redirect_https={redirect}");
        }
        out.push(line);
    }
    for (name, p) in c.upstreams.iter().filter(|(n, _)| *n != "static-site") {
        let servers: Vec<&str> = p.servers.iter().map(|s| s.addr.as_str()).collect();
        let mut line = format!("pool {name} [{}]", servers.join(", "));
        if p.protocol.name() != "http1" {
            line += &format!(" protocol={}", p.protocol.name());
        }
        if let Some(tls) = p.tls_options() {
            line += &format!(" tls(verify={})", !tls.insecure_skip_verify);
        }
        for (what, d, default) in [
            ("connect_timeout", p.connect_timeout.0, 5),
            ("read_timeout", p.read_timeout.0, 60),
            ("write_timeout", p.write_timeout.0, 60),
        ] {
            if d.as_secs() != default {
                line += &format!(" {what}={}s", d.as_secs());
            }
        }
        if let Some(s) = &p.sticky {
            let ttl = s
                .ttl
                .map(|t| format!(" ttl={}s", t.0.as_secs()))
                .unwrap_or_default();
            let signed = if s.secret.is_some() { " secret" } else { "" };
            line += &format!(
                " sticky(cookie={}{ttl}{signed})",
                s.cookie.as_deref().unwrap_or("-")
            );
        }
        out.push(line);
    }
    for cert in &t.certs {
        out.push(format!("cert {} [{}]", cert.source, cert.names.join(", ")));
    }
    for p in &t.problems {
        out.push(format!("problem {p}"));
    }
    out.push(format!("ingresses {}", t.ingresses));
    out.join("\n") + "\n"
}

const CASES: &[&str] = &[
    "simple",
    "tls",
    "multiple-hosts",
    "default-backend",
    "annotations",
    "conflict",
    "missing",
    "unsupported",
];

#[test]
fn fixtures_translate_to_their_expected_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bless = std::env::var_os("RPROXY_BLESS").is_some();
    let mut failed = Vec::new();
    for name in CASES {
        let got = summary(&run(name, dir.path()));
        let path = Path::new(FIXTURES).join(format!("{name}.expected"));
        if bless {
            std::fs::write(&path, &got).expect("write expected");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failed.push(format!("--- {name}.expected\n{want}+++ got\n{got}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_translation_compiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in CASES {
        let t = run(name, dir.path());
        if let Err(e) = compile_with_certs(&t.loaded, &t.certs, None, None) {
            panic!("{name}: the translation does not compile:\n{e}");
        }
    }
}

/// The compiled table routes as Kubernetes means: exact paths, prefixes, wildcard hosts, the
/// default backend and the oldest Ingress of a conflicting pair.
#[test]
fn compiled_routes_match_kubernetes_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (fixture, host, path, the pool that serves it or 404)
    let table = [
        ("simple", "foo.bar.com", "/foo/x", "default/service1:4200"),
        ("simple", "foo.bar.com", "/bar", "default/service2:8080"),
        ("simple", "foo.bar.com", "/barx", "404"),
        ("simple", "base.example.com", "/", "static-site"),
        (
            "multiple-hosts",
            "foo.bar.com",
            "/login",
            "web/service2:8081",
        ),
        (
            "multiple-hosts",
            "foo.bar.com",
            "/login/x",
            "web/service1:80",
        ),
        ("multiple-hosts", "a.foo.com", "/x", "web/service2:8081"),
        ("multiple-hosts", "elsewhere.org", "/x", "web/service3:80"),
        (
            "default-backend",
            "unknown.org",
            "/x",
            "default/fallback:80",
        ),
        (
            "default-backend",
            "nginx.example.com",
            "/",
            "default/fallback:80",
        ),
        ("conflict", "foo.example.com", "/api/v1", "team-a/a:80"),
        ("conflict", "foo.example.com", "/b", "team-b/b:80"),
        ("missing", "app.example.com", "/gone", "default/web:80"),
        (
            "annotations",
            "rewrite.bar.com",
            "/something/x",
            "apps/api:80@sticky-rewrite",
        ),
    ];
    for (name, host, path, want) in table {
        let t = run(name, dir.path());
        let compiled = compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
        let got = match compiled
            .runtime
            .routes
            .lookup(host, path)
            .map(|r| &r.target)
        {
            Some(Target::Upstream(pool)) => pool.name.clone(),
            Some(Target::Static(_)) => "static".into(),
            None => "404".into(),
        };
        assert_eq!(got, want, "{name}: {host}{path}");
    }
    // rewrite-target `/$2` on `/something(/|$)(.*)`: the prefix is removed upstream.
    let t = run("annotations", dir.path());
    let compiled = compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
    let route = compiled
        .runtime
        .routes
        .lookup("rewrite.bar.com", "/something/x");
    let upstream = route.map(|r| r.upstream_path("/something/x?q=1").into_owned());
    assert_eq!(upstream.as_deref(), Some("/x?q=1"));
}

/// Another class name: only Ingresses naming it are read.
#[test]
fn ingress_class_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text =
        std::fs::read_to_string(Path::new(FIXTURES).join("default-backend.yaml")).expect("fixture");
    let snapshot = Snapshot::from_yaml(&text).expect("parses");
    let options = Options {
        ingress_class: "nginx".into(),
        default_class: false,
    };
    let t = translate(&snapshot, &options, &base(dir.path()));
    // The `nginx` IngressClass names another controller: none of these are ours.
    assert_eq!(t.ingresses, 0);
    let options = Options {
        ingress_class: "other".into(),
        default_class: true,
    };
    let t = translate(&snapshot, &options, &base(dir.path()));
    assert_eq!(t.ingresses, 1, "only the Ingress without a class");
}

/// Garbage in a manifest is an error from `from_yaml`, never a panic; odd but valid objects
/// (no spec, no rules, empty names) translate without one.
#[test]
fn odd_objects_do_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        Snapshot::from_yaml("kind: Ingress\napiVersion: networking.k8s.io/v1\nspec: 3\n").is_err()
    );
    let odd = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: empty }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: no-rules, namespace: x }
spec: { ingressClassName: rproxy }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: no-port, namespace: x }
spec:
  ingressClassName: rproxy
  rules:
  - host: "UPPER.example.com"
    http:
      paths:
      - { path: "", pathType: Weird, backend: { service: { name: s } } }
      - { pathType: Prefix, backend: { service: { name: s } } }
      - { pathType: Prefix, backend: { resource: { kind: Bucket, name: b } } }
---
apiVersion: v1
kind: Service
metadata: { name: s, namespace: x }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: s-1, namespace: x, labels: { kubernetes.io/service-name: s } }
addressType: FQDN
endpoints: [{ addresses: ["not-an-ip"] }]
"#;
    let snapshot = Snapshot::from_yaml(odd).expect("valid objects");
    let t = translate(&snapshot, &Options::default(), &base(dir.path()));
    assert_eq!(t.loaded.config.routes.len(), 1, "{:?}", t.problems);
    assert_eq!(t.problems.len(), 3, "{:#?}", t.problems);
    compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
}

/// ingress-nginx's redirect rules on the compiled runtime: a host in `spec.tls` is redirected
/// to https, a host without TLS is not, `force-ssl-redirect` redirects without TLS and
/// `ssl-redirect: "false"` turns it off; the base's own routes follow `tls.redirect_http`,
/// off unless the base says otherwise.
#[test]
fn https_redirects_follow_ingress_nginx() {
    use rproxy::request::limits::redirect_port;
    use rproxy::request::Listener;
    let dir = tempfile::tempdir().expect("tempdir");
    let redirects = |name: &str, host: &str, path: &str| -> bool {
        let t = run(name, dir.path());
        let compiled = compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
        redirect_port(Listener::Http, &compiled.runtime, host, path).is_some()
    };
    assert!(redirects("tls", "https-example.foo.com", "/"));
    assert!(!redirects("tls", "plain.foo.com", "/"));
    assert!(
        redirects("annotations", "grpc.example.com", "/"),
        "force-ssl-redirect"
    );
    assert!(
        !redirects("annotations", "rewrite.bar.com", "/something/x"),
        "ssl-redirect: false"
    );
    assert!(
        !redirects("tls", "base.example.com", "/"),
        "tls.redirect_http defaults to off in Kubernetes mode"
    );
    assert!(!redirects("tls", "https-example.foo.com.other", "/"));
}

/// The certificate of a TLS Secret is served for its names, beside the self-signed fallback.
#[test]
fn secret_certificates_are_served_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = run("tls", dir.path());
    let compiled = compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
    let store = compiled.certs.expect("an https listener has certificates");
    assert!(store.covers("https-example.foo.com"));
    assert!(store.covers("x.foo.com"), "the certificate's *.foo.com");
    assert!(!store.covers("plain.example.org"));
}
