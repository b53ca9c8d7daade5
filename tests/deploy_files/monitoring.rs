//! Prometheus (examples/prometheus/) and Grafana (examples/grafana/): the scrape config reaches
//! the admin listener, and the rules and the dashboard use only the contract's metric names.

use std::collections::BTreeSet;

use crate::{read, seq, str_of, yaml_file};

/// The metric names of the user contract (README.md, "Admin listener and metrics").
const CONTRACT_METRICS: &[&str] = &[
    "rproxy_requests_total",
    "rproxy_request_duration_seconds",
    "rproxy_upstream_healthy",
    "rproxy_upstream_requests_total",
    "rproxy_active_connections",
    "rproxy_websocket_connections",
    "rproxy_config_reloads_total",
    "rproxy_config_last_reload_success_timestamp_seconds",
    "rproxy_certificate_expiry_timestamp_seconds",
    "rproxy_acme_orders_total",
];

/// The histogram among them, whose series carry these suffixes.
const HISTOGRAM: &str = "rproxy_request_duration_seconds";
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// The `rproxy_*` metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("rproxy_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

fn assert_contract_metric(name: &str, whence: &str) {
    let base = HISTOGRAM_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|b| *b == HISTOGRAM)
        .unwrap_or(name);
    assert!(
        CONTRACT_METRICS.contains(&base),
        "{whence}: `{name}` is not a contract metric"
    );
}

/// Every string under an `expr` or `query` key, at any depth.
fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_uses_only_contract_metrics() {
    let rel = "examples/grafana/rproxy-dashboard.json";
    let dash: serde_json::Value =
        serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(dash["title"].is_string() && dash["schemaVersion"].is_u64());
    let panels = dash["panels"].as_array().expect("panels");
    let ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "every panel has an id");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "panel ids are unique"
    );

    let mut exprs = Vec::new();
    json_exprs(&dash, &mut exprs);
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            assert_contract_metric(&name, rel);
            used.insert(name);
        }
    }
    for wanted in [
        "rproxy_requests_total",
        "rproxy_request_duration_seconds_bucket",
        "rproxy_upstream_healthy",
        "rproxy_certificate_expiry_timestamp_seconds",
        "rproxy_config_reloads_total",
        "rproxy_config_last_reload_success_timestamp_seconds",
        "rproxy_active_connections",
        "rproxy_websocket_connections",
    ] {
        assert!(used.contains(wanted), "{rel}: no panel shows {wanted}");
    }
    let has = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    assert!(has("histogram_quantile(0.5,") && has("histogram_quantile(0.99,"));
    assert!(has("code=~\"5..\""), "a 5xx panel");
    assert!(
        has("rproxy_certificate_expiry_timestamp_seconds{")
            && exprs
                .iter()
                .any(|e| e.contains("certificate_expiry") && e.contains("time()")),
        "certificate expiry relative to now"
    );
}

#[test]
fn prometheus_config_scrapes_admin_and_rules_use_contract_metrics() {
    let prom = yaml_file("examples/prometheus/prometheus.yml");
    let jobs = seq(&prom["scrape_configs"], "scrape_configs");
    let scrapes_admin = jobs.iter().any(|j| {
        j["metrics_path"] == "/metrics"
            && seq(&j["static_configs"], "static_configs").iter().any(|s| {
                seq(&s["targets"], "targets")
                    .iter()
                    .any(|t| t.as_str().is_some_and(|t| t.ends_with(":9901")))
            })
    });
    assert!(scrapes_admin, "a job scrapes :9901/metrics");
    for file in seq(&prom["rule_files"], "rule_files") {
        let rel = format!("examples/prometheus/{}", str_of(file, "rule file"));
        let rules = yaml_file(&rel);
        let mut count = 0;
        for group in seq(&rules["groups"], "groups") {
            for rule in seq(&group["rules"], "rules") {
                let expr = str_of(&rule["expr"], "expr");
                for name in metric_names(expr) {
                    assert_contract_metric(&name, &rel);
                }
                count += 1;
            }
        }
        assert!(count > 0, "{rel}: no rules");
    }
}
