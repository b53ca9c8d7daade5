//! Kubernetes manifests (deploy/kubernetes/): the objects exist and fit together, the rproxy
//! Deployment probes `/healthz` and `/readyz`, drains with a preStop sleep, and mounts the
//! ConfigMap as a directory; the ConfigMap's proxy.yaml routes to the headless Service.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

use crate::{
    assert_check_passes, int, proxy_config, root, seq, str_of, yaml_docs, yaml_files_under,
    CERTS_DIR, CONFIG_PATH,
};

/// Every document of every manifest in deploy/kubernetes/ (the ConfigMap deployment; the
/// ingress controller's manifests under controller/ are controller.rs's).
fn manifests() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes");
    let mut files = Vec::new();
    yaml_files_under(&dir, &mut files);
    files.retain(|f| f.parent() == Some(dir.as_path()));
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read manifest");
        for doc in yaml_docs(&text, &f.display().to_string()) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{}: a document without apiVersion/kind",
                f.display()
            );
            docs.push(doc);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn configmap_proxy_yaml() -> String {
    let docs = manifests();
    let maps: Vec<&Value> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|cm| cm["data"]["proxy.yaml"].is_string())
        .collect();
    assert_eq!(maps.len(), 1, "one ConfigMap holds proxy.yaml");
    str_of(&maps[0]["data"]["proxy.yaml"], "ConfigMap data.proxy.yaml").to_string()
}

/// The Deployment whose pods run the rproxy image.
fn rproxy_deployment(docs: &[Value]) -> &Value {
    named(docs, "Deployment", "rproxy")
}

fn only_container<'a>(deployment: &'a Value, what: &str) -> &'a Value {
    let containers = seq(&deployment["spec"]["template"]["spec"]["containers"], what);
    assert_eq!(containers.len(), 1, "{what}: one container");
    &containers[0]
}

fn container_ports(container: &Value) -> BTreeSet<u64> {
    seq(&container["ports"], "container ports")
        .iter()
        .map(|p| int(&p["containerPort"], "containerPort"))
        .collect()
}

/// A probe's HTTP path and the container port number it targets (named or numbered).
fn http_probe(container: &Value, probe: &str) -> (String, u64) {
    let get = &container[probe]["httpGet"];
    let path = str_of(&get["path"], probe).to_string();
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().expect("port number"),
        Value::String(name) => seq(&container["ports"], "ports")
            .iter()
            .find(|p| p["name"] == name.as_str())
            .map(|p| int(&p["containerPort"], "containerPort"))
            .unwrap_or_else(|| panic!("{probe}: no container port named {name}")),
        other => panic!("{probe}: bad port {other:?}"),
    };
    (path, port)
}

/// Whether a label selector (a Service's `selector`, or a `matchLabels`) picks the pods of
/// `deployment`.
fn selects(selector: &Value, deployment: &Value) -> bool {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let wanted = selector.as_mapping().expect("a label selector");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn kubernetes_configmap_proxy_yaml_passes_check() {
    let text = configmap_proxy_yaml();
    assert_check_passes("deploy/kubernetes ConfigMap proxy.yaml", &text, None);
}

#[test]
fn kubernetes_manifests_have_every_object() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes");
    }

    // Two Deployments: rproxy and the app.
    let proxy = rproxy_deployment(&docs);
    let deployments = of_kind(&docs, "Deployment");
    let app = deployments
        .iter()
        .find(|d| d["metadata"]["name"] != "rproxy")
        .expect("the app's Deployment");
    assert_eq!(
        container_ports(only_container(app, "app Deployment")),
        BTreeSet::from([8000])
    );

    // The LoadBalancer Service sends 80 and 443 to rproxy pods.
    let services = of_kind(&docs, "Service");
    let lb = services
        .iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .expect("a Service of type LoadBalancer");
    let lb_ports: BTreeSet<u64> = seq(&lb["spec"]["ports"], "LoadBalancer ports")
        .iter()
        .map(|p| int(&p["port"], "port"))
        .collect();
    assert_eq!(lb_ports, BTreeSet::from([80, 443]));
    assert!(
        selects(&lb["spec"]["selector"], proxy),
        "the LoadBalancer selects the rproxy pods"
    );

    // A headless Service selects the app's pods.
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service (clusterIP: None)");
    assert!(
        selects(&headless["spec"]["selector"], app),
        "the headless Service selects the app"
    );

    // The HPA scales rproxy on CPU, from at least 2 replicas.
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "rproxy");
    assert!(int(&hpa["spec"]["minReplicas"], "minReplicas") >= 2);
    let cpu = seq(&hpa["spec"]["metrics"], "HPA metrics")
        .iter()
        .any(|m| m["resource"]["name"] == "cpu");
    assert!(cpu, "the HPA scales on CPU");

    // The PDB covers the rproxy pods.
    let pdb = of_kind(&docs, "PodDisruptionBudget")[0];
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], proxy));

    // The certs claim is ReadWriteMany, shared by the replicas.
    let pvc = of_kind(&docs, "PersistentVolumeClaim")[0];
    let modes = seq(&pvc["spec"]["accessModes"], "accessModes");
    assert!(modes.iter().any(|m| m == "ReadWriteMany"), "{modes:?}");
}

#[test]
fn kubernetes_rproxy_deployment_probes_drains_and_mounts() {
    let docs = manifests();
    let proxy = rproxy_deployment(&docs);
    let pod = &proxy["spec"]["template"]["spec"];
    let c = only_container(proxy, "rproxy Deployment");

    let args: Vec<&str> = seq(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["-c", CONFIG_PATH]),
        "args {args:?}"
    );
    assert_eq!(container_ports(c), BTreeSet::from([80, 443, 9901]));
    assert_eq!(http_probe(c, "livenessProbe"), ("/healthz".into(), 9901));
    assert_eq!(http_probe(c, "readinessProbe"), ("/readyz".into(), 9901));

    // preStop sleeps, and the pod has time for the sleep plus rproxy's drain.
    let pre_stop: Vec<&str> = seq(
        &c["lifecycle"]["preStop"]["exec"]["command"],
        "preStop command",
    )
    .iter()
    .map(|a| str_of(a, "preStop arg"))
    .collect();
    assert_eq!(pre_stop.first(), Some(&"sleep"), "preStop {pre_stop:?}");
    let sleep: u64 = pre_stop
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("sleep seconds");
    let config = proxy_config(&configmap_proxy_yaml(), "ConfigMap proxy.yaml");
    let grace = config.server.grace_period.0.as_secs();
    let termination = int(
        &pod["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        termination > sleep + grace,
        "terminationGracePeriodSeconds {termination} <= preStop {sleep} + grace_period {grace}"
    );

    for key in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                !c["resources"][key][res].is_null(),
                "resources.{key}.{res} missing"
            );
        }
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(
        pod["securityContext"]["runAsNonRoot"] == true || sc["runAsNonRoot"] == true,
        "runAsNonRoot"
    );
    let uid = &pod["securityContext"]["runAsUser"];
    assert!(uid.as_u64().is_some_and(|u| u != 0), "runAsUser {uid:?}");

    // The ConfigMap is mounted as a directory at /etc/rproxy (subPath mounts miss updates) and
    // the certs claim at /etc/rproxy/certs.
    let mounts = seq(&c["volumeMounts"], "volumeMounts");
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    let volume = |name: &Value| {
        seq(&pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"] == *name)
            .unwrap_or_else(|| panic!("no volume {name:?}"))
            .clone()
    };
    let config_dir = Path::new(CONFIG_PATH)
        .parent()
        .expect("config dir")
        .display()
        .to_string();
    let config_mount = mount(&config_dir);
    assert!(
        config_mount["subPath"].is_null(),
        "no subPath for the ConfigMap"
    );
    let configmap = volume(&config_mount["name"]);
    let cm_name = str_of(&configmap["configMap"]["name"], "configMap volume");
    assert!(!named(&docs, "ConfigMap", cm_name)["data"]["proxy.yaml"].is_null());
    let certs = volume(&mount(CERTS_DIR)["name"]);
    let claim = str_of(
        &certs["persistentVolumeClaim"]["claimName"],
        "certs volume claim",
    );
    named(&docs, "PersistentVolumeClaim", claim);
}

#[test]
fn kubernetes_configmap_routes_to_the_headless_service_with_acme() {
    let docs = manifests();
    let config = proxy_config(&configmap_proxy_yaml(), "ConfigMap proxy.yaml");
    let acme = config.tls.acme.as_ref().expect("tls.acme");
    assert!(
        matches!(acme.directory.as_deref(), None | Some("letsencrypt")),
        "letsencrypt"
    );
    assert_eq!(config.tls.certs.as_deref(), Some(Path::new(CERTS_DIR)));
    assert_eq!(config.listen.admin.as_deref(), Some("0.0.0.0:9901"));

    // Every upstream server is `service:port` (or its cluster FQDN) of a headless Service.
    let headless: Vec<(&str, u64)> = of_kind(&docs, "Service")
        .into_iter()
        .filter(|s| s["spec"]["clusterIP"] == "None")
        .flat_map(|s| {
            let name = str_of(&s["metadata"]["name"], "Service name");
            seq(&s["spec"]["ports"], "ports")
                .iter()
                .map(move |p| (name, int(&p["port"], "port")))
        })
        .collect();
    let servers: Vec<&str> = config
        .upstreams
        .values()
        .flat_map(|u| u.servers.iter().map(|s| s.addr.as_str()))
        .collect();
    assert!(!servers.is_empty());
    for addr in servers {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let service = host.split('.').next().unwrap_or(host);
        let port: u64 = port.parse().expect("port");
        assert!(
            headless.contains(&(service, port)),
            "{addr} is not a headless Service's name and port ({headless:?})"
        );
    }
}
