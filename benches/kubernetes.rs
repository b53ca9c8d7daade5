//! `rproxy --kubernetes` at cluster scale: a snapshot of 1,000 Ingresses (each a host with two
//! paths) over 1,000 Services with 5,000 ready endpoints, translated into a configuration and
//! compiled into a route table: the work of one publish. Before timing, it says how much heap
//! each stage holds (a counting allocator around the system one): the objects (what the
//! controller's watch stores hold), the translated configuration, and the compiled runtime
//! that serves traffic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rproxy::config::{load_str, Loaded};
use rproxy::kubernetes::{translate, Options, Snapshot};
use rproxy::routing::compile::compile_with_certs;
use serde_json::json;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
}

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

/// Heap held by each stage of one publish, printed once.
fn held_memory(base: &Loaded, options: &Options) {
    let at_start = live_mib();
    let snapshot = snapshot();
    let objects = live_mib();
    let t = translate(&snapshot, options, base);
    let translated = live_mib();
    let compiled = compile_with_certs(&t.loaded, &t.certs, None, None).expect("compiles");
    let with_runtime = live_mib();
    drop(t);
    let serving = live_mib();
    eprintln!(
        "kubernetes heap, {INGRESSES} Ingresses / {} endpoints: objects {:.1} MiB; \
         + translated config {:.1} MiB; + compiled runtime {:.1} MiB; \
         held while serving (objects + runtime) {:.1} MiB",
        INGRESSES * ENDPOINTS_PER_SERVICE,
        objects - at_start,
        translated - objects,
        with_runtime - translated,
        serving - at_start,
    );
    black_box(compiled);
}

fn publish(c: &mut Criterion) {
    let base = base();
    let options = Options::default();
    held_memory(&base, &options);
    let snapshot = snapshot();
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
