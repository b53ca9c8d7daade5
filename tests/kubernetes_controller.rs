//! The controller loop against a fake API server: kube-rs's client over `tower_test::mock`
//! answering list and watch requests. It lists and watches every kind, publishes once all are
//! listed, debounces a burst into one publish (and a long stream at least once a second),
//! relists after a 410 Gone keeping what it had, and, end to end, the rproxy binary with
//! `--kubernetes` routes to real upstreams named by an EndpointSlice, following its changes.

mod common;
#[path = "kubernetes/fake_api.rs"]
mod fake_api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::FakeApi;
use rproxy::config::{load_str, ConfigError, Loaded};
use rproxy::kubernetes::controller::{Controller, Debounce, Sink};
use rproxy::kubernetes::{Options, Translated};
use serde_json::json;

const KINDS: [&str; 5] = [
    "IngressClass",
    "Ingress",
    "Service",
    "EndpointSlice",
    "Secret",
];
const SIMPLE: &str = include_str!("fixtures/kubernetes/simple.yaml");
const WAIT: Duration = Duration::from_secs(10);

/// Keeps every translation it is given.
#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<Translated>>,
}

impl Sink for Recorder {
    fn publish(&self, t: &Translated) -> Result<(), ConfigError> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t.clone());
        Ok(())
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn last(&self) -> Option<Translated> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    /// The `host path -> pool` of the routes of the last publish.
    fn routes(&self) -> Vec<String> {
        let Some(t) = self.last() else {
            return Vec::new();
        };
        t.loaded
            .config
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{}{} -> {}",
                    r.host.as_deref().unwrap_or("*"),
                    r.path,
                    r.upstream.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    fn servers(&self, pool: &str) -> Vec<String> {
        let Some(t) = self.last() else {
            return Vec::new();
        };
        let pool = t.loaded.config.upstreams.get(pool).cloned();
        pool.map(|p| p.servers.into_iter().map(|s| s.addr).collect())
            .unwrap_or_default()
    }
}

fn base() -> Loaded {
    let config =
        load_str("listen:\n  http: \"127.0.0.1:1\"\n", "base.yaml", &|_| None).expect("base");
    Loaded {
        config,
        path: "base.yaml".into(),
        dir: ".".into(),
        source: Default::default(),
    }
}

/// Starts a controller on the fake; dropping the returned sender stops it.
fn start(api: &Arc<FakeApi>) -> (Arc<Recorder>, tokio::sync::oneshot::Sender<()>) {
    let recorder = Arc::new(Recorder::default());
    let controller = Controller {
        client: fake_api::mock_client(api.clone()),
        options: Options::default(),
        base: base(),
        base_file: None,
        debounce: Debounce::default(),
        sink: recorder.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    (recorder, stop)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn slice(addresses: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "service2-xyz", "namespace": "default",
                      "labels": { "kubernetes.io/service-name": "service2" } },
        "addressType": "IPv4",
        "ports": [{ "name": "", "port": 9000 }],
        "endpoints": addresses.iter().map(|a| json!({ "addresses": [a] })).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn lists_watches_and_publishes_once_everything_is_listed() {
    let api = FakeApi::new();
    api.apply_yaml(SIMPLE);
    let (recorder, _stop) = start(&api);
    until("the first publish", || recorder.count() >= 1).await;
    assert_eq!(
        recorder.routes(),
        [
            "foo.bar.com/foo -> default/service1:4200",
            "foo.bar.com/bar -> default/service2:8080"
        ]
    );
    assert_eq!(recorder.servers("default/service2:8080"), ["10.2.0.1:9000"]);
    for kind in KINDS {
        assert_eq!(api.lists(kind), 1, "{kind} listed once");
    }
    until("a watch of every kind", || {
        KINDS.iter().all(|k| api.watches(k) >= 1)
    })
    .await;
    // Nothing changes: nothing more is published.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recorder.count(), 1);
    // A change is.
    api.apply(slice(&["10.2.0.7"]));
    until("the change", || {
        recorder.servers("default/service2:8080") == ["10.2.0.7:9000"]
    })
    .await;
    api.delete("Ingress", "default", "simple-fanout-example");
    until("the deletion", || recorder.routes().is_empty()).await;
}

/// A kind that cannot be listed (RBAC) holds back every publish: a configuration without, say,
/// the Secrets would drop TLS hosts. The watcher retries; once it lists, the controller publishes.
#[tokio::test]
async fn nothing_is_published_until_every_kind_is_listed() {
    let api = FakeApi::new();
    api.apply_yaml(SIMPLE);
    api.forbid("Secret", true);
    let (recorder, _stop) = start(&api);
    until("the other kinds' watches", || api.watches("Ingress") >= 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recorder.count(), 0, "published without the Secrets");
    api.forbid("Secret", false);
    until("the publish once Secrets list", || recorder.count() == 1).await;
    assert_eq!(recorder.routes().len(), 2);
}

#[tokio::test]
async fn a_burst_of_changes_is_one_publish_and_a_long_stream_is_not_held_back() {
    let api = FakeApi::new();
    api.apply_yaml(SIMPLE);
    let (recorder, _stop) = start(&api);
    until("the first publish", || recorder.count() >= 1).await;

    // A rollout: a hundred changes at once.
    for i in 0..100 {
        api.apply(slice(&[&format!("10.9.0.{i}")]));
    }
    until("the burst's publish", || recorder.count() >= 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(recorder.count(), 2, "one publish for the whole burst");
    assert_eq!(
        recorder.servers("default/service2:8080"),
        ["10.9.0.99:9000"]
    );

    // A change every 100 ms for 2.5 s never goes quiet for 200 ms: the 1 s bound publishes.
    for i in 0..25 {
        api.apply(slice(&[&format!("10.8.0.{i}")]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = recorder.count() - 2;
    assert!(
        (2..=12).contains(&during),
        "{during} publishes during 2.5 s of 25 changes: at least one a second, far fewer than one per change"
    );
    until("the last change", || {
        recorder.servers("default/service2:8080") == ["10.8.0.24:9000"]
    })
    .await;
}

#[tokio::test]
async fn a_410_gone_relists_and_keeps_what_was_published() {
    let api = FakeApi::new();
    api.apply_yaml(SIMPLE);
    let (recorder, _stop) = start(&api);
    until("the first publish", || recorder.count() >= 1).await;
    until("the Ingress watch", || api.watches("Ingress") >= 1).await;

    // Deleted while the watch was not looking; then the watch expires.
    api.delete_quietly("Ingress", "default", "simple-fanout-example");
    api.gone("Ingress");
    until("a relist of Ingresses", || api.lists("Ingress") == 2).await;
    until("the publish after the relist", || {
        recorder.routes().is_empty()
    })
    .await;
    assert_eq!(api.lists("Service"), 1, "only the expired watch relists");
    assert!(api.watches("Ingress") >= 2, "and watches again");
    // Still watching: a new Ingress shows.
    let ingress: serde_json::Value = {
        let text = SIMPLE.split("---").nth(1).expect("the Ingress document");
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).expect("YAML"))
            .expect("JSON")
    };
    api.apply(ingress);
    until("the Ingress again", || recorder.routes().len() == 2).await;
}

/// The whole proxy: the binary with `--kubernetes` and a KUBECONFIG naming the fake (over a
/// real socket), real upstreams on loopback named by an EndpointSlice.
#[tokio::test]
async fn end_to_end_the_binary_routes_what_the_cluster_says() {
    use common::{Proxy, Upstream};
    let one = Upstream::named("one").await;
    let two = Upstream::named("two").await;
    let api = FakeApi::new();
    let endpoints = |up: &Upstream| {
        let addr: std::net::SocketAddr = up.host_port().parse().expect("addr");
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "app-1", "namespace": "shop",
                          "labels": { "kubernetes.io/service-name": "app" } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": addr.port() }],
            "endpoints": [{ "addresses": [addr.ip().to_string()], "conditions": { "ready": true } }],
        })
    };
    api.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: shop, namespace: shop }
spec:
  ingressClassName: rproxy
  rules:
  - host: shop.test
    http:
      paths:
      - { path: /, pathType: Prefix, backend: { service: { name: app, port: { name: http } } } }
---
apiVersion: v1
kind: Service
metadata: { name: app, namespace: shop }
spec: { ports: [{ name: http, port: 80, targetPort: 8000 }] }
"#,
    );
    api.apply(endpoints(&one));
    let addr = fake_api::serve(api.clone()).await;
    let builder = Proxy::builder();
    let kubeconfig = builder.dir().join("kubeconfig");
    std::fs::write(&kubeconfig, fake_api::kubeconfig(addr)).expect("kubeconfig");
    // Not ready while a kind cannot be listed: nothing from the cluster is published yet.
    api.forbid("Secret", true);
    let mut proxy = builder
        .arg("--kubernetes")
        .env("KUBECONFIG", kubeconfig.to_str().expect("path"))
        .no_wait()
        .start()
        .await;
    let readyz = || async {
        let url = proxy.admin_url("/readyz");
        match common::client().get(url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    };
    assert!(
        common::wait_until(WAIT, || async { readyz().await == 503 }).await,
        "{}",
        proxy.stderr()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(readyz().await, 503, "ready before the cluster was read");
    api.forbid("Secret", false);
    proxy.wait_ready().await;
    assert!(
        body(&proxy, "shop.test").await.contains("one"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(proxy.get_host("other.test", "/").await.status(), 404);
    // The pod moves: the next publish routes to the new address.
    api.apply(endpoints(&two));
    let mut moved = false;
    for _ in 0..100 {
        if body(&proxy, "shop.test").await.contains("two") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        moved,
        "requests follow the EndpointSlice\n{}",
        proxy.stderr()
    );

    // Pods move back and forth under load: every request is answered.
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = proxy.url("/x");
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (failures, sent, stop, url) =
                (failures.clone(), sent.clone(), stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = common::client();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ok = match client.get(&url).header("host", "shop.test").send().await {
                        Ok(r) => r.status() == 200,
                        Err(_) => false,
                    };
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !ok {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for i in 0..6 {
        api.apply(endpoints(if i % 2 == 0 { &one } else { &two }));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.await.expect("load task");
    }
    let (sent, failures) = (
        sent.load(std::sync::atomic::Ordering::Relaxed),
        failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(sent > 50, "only {sent} requests sent");
    assert_eq!(
        failures,
        0,
        "{failures} of {sent} requests failed across 6 swaps\n{}",
        proxy.stderr()
    );

    // SIGHUP reads the base file again; the cluster's routes stay.
    let yaml = format!(
        "{}upstreams:\n  extra:\n    servers: [{}]\nroutes:\n  - {{ host: base.test, path: /, upstream: extra }}\n",
        proxy.yaml,
        one.host_port()
    );
    proxy.rewrite(&yaml);
    let before = proxy.reloads("ok").await;
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_reloads_above("ok", before, WAIT).await,
        "{}",
        proxy.stderr()
    );
    assert!(
        body(&proxy, "base.test").await.contains("one"),
        "{}",
        proxy.stderr()
    );
    assert!(
        body(&proxy, "shop.test").await.contains("two"),
        "{}",
        proxy.stderr()
    );
}

/// The body of a GET of `/x` through the proxy's http listener for `host`.
async fn body(proxy: &common::Proxy, host: &str) -> String {
    let response = proxy.get_host(host, "/x").await;
    response.text().await.unwrap_or_default()
}

/// `--kubernetes` with no cluster to talk to is a configuration error at start: exit 1, said.
#[tokio::test]
async fn no_cluster_exits_1() {
    let builder = common::Proxy::builder();
    let missing = builder.dir().join("no-such-kubeconfig");
    let mut proxy = builder
        .arg("--kubernetes")
        .env("KUBECONFIG", missing.to_str().expect("path"))
        .env("KUBERNETES_SERVICE_HOST", "")
        .no_wait()
        .start()
        .await;
    let status = proxy.wait_exit(WAIT).await.expect("exits");
    assert_eq!(status.code(), Some(1), "{}", proxy.stderr());
    assert!(proxy.stderr().contains("no cluster"), "{}", proxy.stderr());
}
