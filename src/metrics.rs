//! Prometheus metrics under the contract's names, in one process-wide registry (the only
//! global we keep). Labels are route, pool and server names from the config: always bounded.

use std::cell::RefCell;
use std::hash::Hasher;
use std::sync::LazyLock;

use fnv::FnvHashMap;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_healthy: IntGaugeVec,
    upstream_info: IntGaugeVec,
    upstream_requests: IntCounterVec,
    grpc_responses: IntCounterVec,
    active_connections: IntGaugeVec,
    websockets: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
    cert_expiry: prometheus::GaugeVec,
    acme_orders: IntCounterVec,
}

/// Latency buckets for web traffic: 1 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics::new();
    // Both results exist from the start, so `increase()` sees the first failed reload.
    for result in ["ok", "error"] {
        m.reloads.with_label_values(&[result]);
    }
    m
});

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rproxy_request_duration_seconds",
                "Time from request to response end",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "upstream"],
        )
        .expect("metric definition");
        r.register(Box::new(duration.clone()))
            .expect("metric registered once");
        let last_reload = Gauge::new(
            "rproxy_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration load that took effect",
        )
        .expect("metric definition");
        r.register(Box::new(last_reload.clone()))
            .expect("metric registered once");
        let cert_expiry = prometheus::GaugeVec::new(
            Opts::new(
                "rproxy_certificate_expiry_timestamp_seconds",
                "Unix time a served certificate expires",
            ),
            &["domain"],
        )
        .expect("metric definition");
        r.register(Box::new(cert_expiry.clone()))
            .expect("metric registered once");
        Metrics {
            requests: counter(
                &r,
                "rproxy_requests_total",
                "Requests answered",
                &["route", "upstream", "code"],
            ),
            upstream_healthy: gauge(
                &r,
                "rproxy_upstream_healthy",
                "1 when the server passes its probes",
                &["upstream", "server"],
            ),
            upstream_info: gauge(
                &r,
                "rproxy_upstream_info",
                "1 for each pool, labelled with the protocol rproxy speaks to its servers",
                &["upstream", "protocol"],
            ),
            upstream_requests: counter(
                &r,
                "rproxy_upstream_requests_total",
                "Requests sent to a server",
                &["upstream", "server", "code"],
            ),
            grpc_responses: counter(
                &r,
                "rproxy_grpc_responses_total",
                "gRPC calls ended, by grpc-status (0 OK, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE...)",
                &["route", "upstream", "grpc_status"],
            ),
            active_connections: gauge(
                &r,
                "rproxy_active_connections",
                "Open client connections",
                &["listener"],
            ),
            websockets: gauge(
                &r,
                "rproxy_websocket_connections",
                "Open WebSocket tunnels",
                &["route"],
            ),
            reloads: counter(
                &r,
                "rproxy_config_reloads_total",
                "Configuration reloads",
                &["result"],
            ),
            acme_orders: counter(
                &r,
                "rproxy_acme_orders_total",
                "ACME orders",
                &["domain", "result"],
            ),
            duration,
            last_reload,
            cert_expiry,
            registry: r,
        }
    }
}

/// Series handles cached per thread: prometheus's own lookup (SipHash over every label and a
/// lock) is most of a metric's cost per request. These series are never removed, so a cached
/// handle stays the registered one.
struct Cached<T> {
    a: Box<str>,
    b: Box<str>,
    code: u16,
    handles: T,
}

type Cache<T> = RefCell<FnvHashMap<u64, Vec<Cached<T>>>>;

thread_local! {
    static REQUEST_SERIES: Cache<(IntCounter, Histogram)> = RefCell::default();
    static UPSTREAM_SERIES: Cache<IntCounter> = RefCell::default();
}

/// The handles for labels `a`, `b` and `code`, made by `make` the first time on this thread.
fn cached<T: Clone>(
    cache: &'static std::thread::LocalKey<Cache<T>>,
    a: &str,
    b: &str,
    code: u16,
    make: impl FnOnce() -> T,
) -> T {
    let mut h = fnv::FnvHasher::default();
    h.write(a.as_bytes());
    h.write_u8(0xff);
    h.write(b.as_bytes());
    h.write_u16(code);
    let key = h.finish();
    cache.with(|c| {
        let mut c = c.borrow_mut();
        let bucket = c.entry(key).or_default();
        if let Some(e) = bucket
            .iter()
            .find(|e| e.code == code && &*e.a == a && &*e.b == b)
        {
            return e.handles.clone();
        }
        let handles = make();
        bucket.push(Cached {
            a: a.into(),
            b: b.into(),
            code,
            handles: handles.clone(),
        });
        handles
    })
}

/// Records one answered request.
pub fn observe_request(route: &str, upstream: &str, code: u16, seconds: f64) {
    let (requests, duration) = cached(&REQUEST_SERIES, route, upstream, code, || {
        let m = &*METRICS;
        let mut buf = [0u8; 3];
        let labels = [route, upstream, code_str(code, &mut buf)];
        (
            m.requests.with_label_values(&labels),
            m.duration.with_label_values(&[route, upstream]),
        )
    });
    requests.inc();
    duration.observe(seconds);
}

/// Records one request sent to an upstream server.
pub fn observe_upstream(upstream: &str, server: &str, code: u16) {
    let counter = cached(&UPSTREAM_SERIES, upstream, server, code, || {
        let mut buf = [0u8; 3];
        METRICS
            .upstream_requests
            .with_label_values(&[upstream, server, code_str(code, &mut buf)])
    });
    counter.inc();
}

/// gRPC's status codes as labels; any other value a server sends is `other`, so the label
/// stays bounded.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// Records one gRPC call's status (its HTTP status is 200 whether it failed or not).
pub fn observe_grpc(route: &str, upstream: &str, code: u16) {
    let code = GRPC_CODES
        .get(usize::from(code))
        .copied()
        .unwrap_or("other");
    METRICS
        .grpc_responses
        .with_label_values(&[route, upstream, code])
        .inc();
}

pub fn set_upstream_healthy(upstream: &str, server: &str, healthy: bool) {
    METRICS
        .upstream_healthy
        .with_label_values(&[upstream, server])
        .set(i64::from(healthy));
}

/// Describes the pools of a configuration about to take effect (`rproxy_upstream_info`),
/// dropping the series of pools that `old` had and `new` does not (or with another protocol).
pub fn describe_pools<'a>(
    old: impl Iterator<Item = (&'a str, &'static str)>,
    new: impl Iterator<Item = (&'a str, &'static str)> + Clone,
) {
    let info = &METRICS.upstream_info;
    for gone in old.filter(|o| !new.clone().any(|n| n == *o)) {
        let _ = info.remove_label_values(&[gone.0, gone.1]);
    }
    for (pool, protocol) in new {
        info.with_label_values(&[pool, protocol]).set(1);
    }
}

/// Drops the series of a server that left its pool.
pub fn forget_upstream_server(upstream: &str, server: &str) {
    let _ = METRICS
        .upstream_healthy
        .remove_label_values(&[upstream, server]);
}

pub fn connection_opened(listener: &str) {
    METRICS
        .active_connections
        .with_label_values(&[listener])
        .inc();
}

pub fn connection_closed(listener: &str) {
    METRICS
        .active_connections
        .with_label_values(&[listener])
        .dec();
}

pub fn websocket_opened(route: &str) {
    METRICS.websockets.with_label_values(&[route]).inc();
}

pub fn websocket_closed(route: &str) {
    METRICS.websockets.with_label_values(&[route]).dec();
}

/// Counts a reload; a good one also stamps the last-success time.
pub fn config_reloaded(ok: bool) {
    METRICS
        .reloads
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
    if ok {
        config_applied();
    }
}

/// Stamps the time a configuration took effect (the first load, or a reload).
pub fn config_applied() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    METRICS.last_reload.set(now.as_secs_f64());
}

pub fn set_certificate_expiry(domain: &str, unix_seconds: f64) {
    METRICS
        .cert_expiry
        .with_label_values(&[domain])
        .set(unix_seconds);
}

pub fn acme_order(domain: &str, ok: bool) {
    METRICS
        .acme_orders
        .with_label_values(&[domain, if ok { "ok" } else { "error" }])
        .inc();
}

/// The registry in Prometheus text format.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}

/// A status code as text without allocating.
fn code_str(code: u16, buf: &mut [u8; 3]) -> &str {
    let code = code.min(999);
    buf[0] = b'0' + (code / 100) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}
