//! `rproxy --kubernetes` at cluster scale: a snapshot of 1,000 Ingresses (each a host with two
//! paths) over 1,000 Services with 5,000 ready endpoints, translated into a configuration and
//! compiled into a route table: the work of one publish.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rproxy::config::{load_str, Loaded};
use rproxy::kubernetes::{translate, Options, Snapshot};
use rproxy::routing::compile::compile_with_certs;
use serde_json::json;

const INGRESSES: usize = 1000;
const ENDPOINTS_PER_SERVICE: usize = 5;

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<K> {
    Arc::new(serde_json::from_value(value).expect("a valid object"))
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..INGRESSES {
        let ns = format!("team-{}", i % 50);
        let svc = format!("svc-{i}");
        s.ingresses.push(object(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": format!("ing-{i}"), "namespace": ns,
                          "annotations": { "nginx.ingress.kubernetes.io/proxy-body-size": "8m" } },
            "spec": { "ingressClassName": "rproxy", "rules": [{
                "host": format!("app-{i}.example.com"),
                "http": { "paths": [
                    { "path": "/", "pathType": "Prefix",
                      "backend": { "service": { "name": svc, "port": { "number": 80 } } } },
                    { "path": "/api", "pathType": "Exact",
                      "backend": { "service": { "name": svc, "port": { "name": "http" } } } }
                ] } }] }
        })));
        s.services.push(object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": svc, "namespace": ns },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
        })));
        let endpoints: Vec<_> = (0..ENDPOINTS_PER_SERVICE)
            .map(|e| {
                json!({ "addresses": [format!("10.{}.{}.{}", i / 250, i % 250, e + 1)],
                             "conditions": { "ready": true } })
            })
            .collect();
        s.endpoint_slices.push(object(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": format!("{svc}-abcde"), "namespace": ns,
                          "labels": { "kubernetes.io/service-name": svc } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": endpoints
        })));
    }
    s
}

fn base() -> Loaded {
    let yaml = "listen:\n  http: \"127.0.0.1:1\"\n";
    Loaded {
        config: load_str(yaml, "base.yaml", &|_| None).expect("base"),
        path: "base.yaml".into(),
        dir: std::env::temp_dir(),
        source: Default::default(),
    }
}

fn publish(c: &mut Criterion) {
    let snapshot = snapshot();
    let base = base();
    let options = Options::default();
    let t = translate(&snapshot, &options, &base);
    assert_eq!(
        t.loaded.config.routes.len(),
        2 * INGRESSES,
        "{:?}",
        t.problems.first()
    );
    assert!(t.problems.is_empty());
    let mut group = c.benchmark_group("kubernetes");
    group.sample_size(10);
    group.bench_function("translate 1000 Ingresses, 5000 endpoints", |b| {
        b.iter(|| translate(black_box(&snapshot), &options, &base))
    });
    group.bench_function("translate + compile 1000 Ingresses, 5000 endpoints", |b| {
        b.iter(|| {
            let t = translate(black_box(&snapshot), &options, &base);
            compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles")
        })
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
