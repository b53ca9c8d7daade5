//! The ingress controller's manifests (deploy/kubernetes/controller/) and, through
//! `check_controller`, the Helm chart's rendering: the ClusterRole grants exactly what the
//! controller asks for (`rproxy::kubernetes::rbac::RULES`), the Deployment runs
//! `rproxy --kubernetes` on a base file that passes `rproxy -t` and whose listeners are the
//! container's ports and probes, the Service reaches those ports, and the example Ingress
//! translates to the routes and limits its annotations say, with no problem.

use std::collections::BTreeSet;

use serde_yaml::Value;

use rproxy::kubernetes::rbac::RULES;
use rproxy::kubernetes::{translate, Options, Snapshot};

use crate::{assert_check_passes, int, proxy_config, root, seq, str_of, yaml_docs};

/// Every document of the controller's manifests.
fn manifests() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes/controller");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes/controller")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read manifest");
            yaml_docs(&text, &f.display().to_string())
        })
        .collect()
}

pub(crate) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all = of_kind(docs, kind);
    assert_eq!(all.len(), 1, "one {kind}");
    all[0]
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    seq(v, what)
        .iter()
        .map(|s| str_of(s, what).to_string())
        .collect()
}

/// (group, resource, verb) of every rule in `rules`.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in seq(rules, "rules") {
        for group in strings(&rule["apiGroups"], "apiGroups") {
            for resource in strings(&rule["resources"], "resources") {
                for verb in strings(&rule["verbs"], "verbs") {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

fn needed() -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in RULES {
        for resource in rule.resources {
            for verb in rule.verbs {
                out.insert((rule.group.into(), resource.to_string(), verb.to_string()));
            }
        }
    }
    out
}

/// The container's port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    seq(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| int(&p["containerPort"], "containerPort"))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: no port"))
}

/// Whether `selector` picks the pods of `deployment`.
fn selects(selector: &Value, deployment: &Value) -> bool {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let wanted = selector.as_mapping().expect("a label selector");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

/// What every shipped form of the controller (plain manifests, Helm rendering) must hold.
/// Returns the base configuration's text.
pub(crate) fn check_controller(docs: &[Value], what: &str) -> String {
    // RBAC: exactly the controller's rules, bound to the pods' service account.
    let role = one(docs, "ClusterRole");
    assert_eq!(
        grants(&role["rules"]),
        needed(),
        "{what}: the ClusterRole must grant exactly src/kubernetes/rbac.rs's RULES"
    );
    let deployment = one(docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let account = str_of(&pod["serviceAccountName"], "serviceAccountName");
    let binding = one(docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert!(
        seq(&binding["subjects"], "subjects")
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account),
        "{what}: the binding names the pods' service account {account}"
    );
    assert_eq!(
        one(docs, "ServiceAccount")["metadata"]["name"],
        account,
        "{what}"
    );

    // The container runs --kubernetes on the mounted base file.
    let containers = seq(&pod["containers"], "containers");
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    let args = strings(&c["args"], "args");
    assert!(args.iter().any(|a| a == "--kubernetes"), "{what}: {args:?}");
    let class = args
        .windows(2)
        .find(|w| w[0] == "--ingress-class")
        .map(|w| w[1].clone())
        .expect("--ingress-class");
    let base_path = args
        .windows(2)
        .find(|w| w[0] == "-c")
        .map(|w| w[1].clone())
        .expect("-c base file");
    let (dir, file) = base_path.rsplit_once('/').expect("an absolute path");
    let mount = seq(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
    assert!(
        mount["subPath"].is_null(),
        "{what}: no subPath (misses updates)"
    );
    let volume = seq(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the base volume");
    let map_name = str_of(&volume["configMap"]["name"], "configMap volume");
    let map = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == map_name)
        .unwrap_or_else(|| panic!("{what}: no ConfigMap {map_name}"));
    let base = str_of(&map["data"][file], "the base file").to_string();
    assert_check_passes(&format!("{what}: {base_path}"), &base, None);

    // Listeners, container ports, probes and the Service agree.
    let config = proxy_config(&base, what);
    let listeners: Vec<_> = config.listen.addrs().collect();
    assert_eq!(
        listeners.len(),
        3,
        "{what}: http, https and admin listeners"
    );
    for (name, addr) in listeners {
        assert_eq!(container_port(c, name), port_of(addr), "{what}: {name}");
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{what}: {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{what}: {probe}");
    }
    let env: BTreeSet<String> = seq(&c["env"], "env")
        .iter()
        .map(|e| str_of(&e["name"], "env name").to_string())
        .collect();
    for name in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(env.contains(name), "{what}: env {name}");
    }
    let sleep: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("preStop sleep N");
    let termination = int(&pod["terminationGracePeriodSeconds"], "termination grace");
    assert!(termination > sleep + config.server.grace_period.0.as_secs());
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    let lb = of_kind(docs, "Service")
        .into_iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .unwrap_or_else(|| panic!("{what}: a LoadBalancer Service"));
    assert!(selects(&lb["spec"]["selector"], deployment), "{what}");
    let targets: BTreeSet<(u64, String)> = seq(&lb["spec"]["ports"], "ports")
        .iter()
        .map(|p| {
            let target = str_of(&p["targetPort"], "targetPort").to_string();
            container_port(c, &target);
            (int(&p["port"], "port"), target)
        })
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from([(80, "http".into()), (443, "https".into())])
    );
    for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        for doc in of_kind(docs, kind) {
            if kind == "PodDisruptionBudget" {
                assert!(selects(&doc["spec"]["selector"]["matchLabels"], deployment));
            } else {
                assert_eq!(
                    doc["spec"]["scaleTargetRef"]["name"],
                    deployment["metadata"]["name"]
                );
                assert!(int(&doc["spec"]["minReplicas"], "minReplicas") >= 2);
            }
        }
    }

    // The IngressClass (when shipped) is the one served, and names rproxy's controller.
    for ic in of_kind(docs, "IngressClass") {
        assert_eq!(ic["metadata"]["name"], class.as_str(), "{what}");
        assert_eq!(ic["spec"]["controller"], rproxy::kubernetes::CONTROLLER);
    }
    base
}

#[test]
fn controller_manifests_hold_together() {
    let docs = manifests();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "IngressClass",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    ] {
        assert!(!of_kind(&docs, kind).is_empty(), "no {kind}");
    }
    check_controller(&docs, "deploy/kubernetes/controller");
}

/// The example Ingress, with the app's Service from ../fastapi.yaml, a ready EndpointSlice and
/// its TLS Secret, becomes one route with the annotations' limits and no problem.
#[test]
fn example_ingress_translates_to_what_its_annotations_say() {
    let dir = root().join("deploy/kubernetes");
    let mut text =
        std::fs::read_to_string(dir.join("controller/example-ingress.yaml")).expect("example");
    text += "\n---\n";
    text += &std::fs::read_to_string(dir.join("fastapi.yaml")).expect("fastapi.yaml");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["app.example.com".to_string()])
        .and_then(|p| p.self_signed(&key))
        .expect("cert");
    text += &format!(
        r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: fastapi-abc
  namespace: default
  labels: {{ kubernetes.io/service-name: fastapi }}
addressType: IPv4
ports: [{{ name: http, port: 8000, protocol: TCP }}]
endpoints:
  - addresses: [10.0.0.7]
    conditions: {{ ready: true }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: app-example-com-tls, namespace: default }}
type: kubernetes.io/tls
stringData: {{ tls.crt: {crt:?}, tls.key: {key:?} }}
"#,
        crt = cert.pem(),
        key = key.serialize_pem()
    );
    let snapshot = Snapshot::from_yaml(&text).expect("manifests parse");
    let base = rproxy::kubernetes::default_base().expect("built-in base");
    let t = translate(&snapshot, &Options::default(), &base);
    assert!(t.problems.is_empty(), "problems: {:?}", t.problems);
    let routes: Vec<_> = t.loaded.config.routes.iter().collect();
    assert_eq!(routes.len(), 1, "{routes:?}");
    let route = routes[0];
    assert_eq!(route.host.as_deref(), Some("app.example.com"));
    assert_eq!(route.path, "/");
    assert_eq!(route.max_body.0, 20 << 20, "proxy-body-size: 20m");
    assert_eq!(route.rate_limit.as_deref(), Some("50/s"));
    let pool = &t.loaded.config.upstreams[route.upstream.as_deref().expect("a pool")];
    let servers: Vec<&str> = pool.servers.iter().map(|s| s.addr.as_str()).collect();
    assert_eq!(servers, ["10.0.0.7:8000"]);
    assert_eq!(pool.read_timeout.0.as_secs(), 120);
    assert_eq!(pool.write_timeout.0.as_secs(), 120);
    assert_eq!(t.certs.len(), 1, "the Secret's certificate");
}
