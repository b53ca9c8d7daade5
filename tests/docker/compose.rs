//! The compose stack: docker-compose.yml brings up rproxy in front of three FastAPI workers
//! (uvicorn in the example's image). The file is used as shipped except for the network: every
//! service runs with `network_mode: host` on loopback ports (container traffic stays on
//! loopback here), so published ports, the net.* sysctl and the compose DNS names are replaced.
//! Checks: Debian's docker-compose 1.29 accepts the file, balancing over the three workers,
//! HTTPS over HTTP/2, a SIGHUP reload through `docker-compose kill -s HUP`, and a clean `stop`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_yaml::{Mapping, Value};

use crate::cli::{self, Cleanup, Project};
use crate::common::free_port;
use crate::{root, say, Built};

/// The loopback ports of one stack.
struct Ports {
    http: u16,
    https: u16,
    admin: u16,
    apps: [u16; 3],
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

fn strings(items: &[&str]) -> Value {
    Value::Sequence(items.iter().map(|s| key(s)).collect())
}

/// deploy/docker/proxy.yaml with loopback addresses for the listeners and the apps.
fn proxy_yaml(ports: &Ports) -> String {
    let mut text = std::fs::read_to_string(root().join("deploy/docker/proxy.yaml"))
        .expect("read deploy/docker/proxy.yaml");
    let mut swaps = vec![
        (
            "\"0.0.0.0:80\"".to_string(),
            format!("\"127.0.0.1:{}\"", ports.http),
        ),
        (
            "\"0.0.0.0:443\"".to_string(),
            format!("\"127.0.0.1:{}\"", ports.https),
        ),
        (
            "\"0.0.0.0:9901\"".to_string(),
            format!("\"127.0.0.1:{}\"", ports.admin),
        ),
    ];
    for (i, port) in ports.apps.iter().enumerate() {
        swaps.push((format!("app{}:8000", i + 1), format!("127.0.0.1:{port}")));
    }
    for (from, to) in swaps {
        assert!(
            text.contains(&from),
            "deploy/docker/proxy.yaml has no {from}"
        );
        text = text.replace(&from, &to);
    }
    text
}

/// An app service on the host's network: uvicorn and its health check on its own port.
fn app_on_loopback(service: &mut Mapping, image: &str, port: u16) {
    let port = port.to_string();
    service.insert(key("image"), key(image));
    service.insert(
        key("command"),
        strings(&["uvicorn", "app:app", "--host", "127.0.0.1", "--port", &port]),
    );
    let probe = format!(
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2)"
    );
    let mut health = Mapping::new();
    health.insert(key("test"), strings(&["CMD", "python", "-c", &probe]));
    health.insert(key("interval"), key("2s"));
    health.insert(key("timeout"), key("2s"));
    health.insert(key("retries"), Value::from(15));
    service.insert(key("healthcheck"), Value::Mapping(health));
}

/// rproxy on the host's network with the loopback proxy.yaml mounted where the file mounts its.
fn rproxy_on_loopback(service: &mut Mapping, image: &str, config: &Path) {
    service.insert(key("image"), key(image));
    let volumes = service
        .get_mut(key("volumes"))
        .and_then(Value::as_sequence_mut)
        .expect("rproxy has volumes");
    let mount = volumes
        .iter_mut()
        .find(|v| {
            v.as_str()
                .is_some_and(|s| s.starts_with("./deploy/docker/proxy.yaml:"))
        })
        .expect("rproxy mounts ./deploy/docker/proxy.yaml");
    *mount = key(&format!("{}:/etc/rproxy/proxy.yaml:ro", config.display()));
}

/// docker-compose.yml as shipped, but on the host's network with this run's images and ports.
fn loopback_compose(built: &Built, ports: &Ports, config: &Path) -> String {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("read compose");
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    let top = doc.as_mapping_mut().expect("a mapping");
    top.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    let services = top
        .get_mut(key("services"))
        .and_then(Value::as_mapping_mut)
        .expect("services");
    for (name, service) in services.iter_mut() {
        let name = name.as_str().expect("service name").to_string();
        let service = service.as_mapping_mut().expect("service is a mapping");
        service.insert(key("network_mode"), key("host"));
        for gone in ["ports", "expose", "sysctls", "build"] {
            service.remove(key(gone));
        }
        match name.as_str() {
            "rproxy" => rproxy_on_loopback(service, &built.rproxy, config),
            app => {
                let i: usize = app
                    .strip_prefix("app")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected service {app}"));
                app_on_loopback(service, &built.fastapi, ports.apps[i - 1]);
            }
        }
    }
    serde_yaml::to_string(&doc).expect("compose YAML")
}

pub async fn check(built: &Built, cleanup: &mut Cleanup) {
    let shipped = root().join("docker-compose.yml").display().to_string();
    let env = [
        ("RUST_IMAGE", "x/rust"),
        ("RUNTIME_IMAGE", "x/runtime"),
        ("PYTHON_IMAGE", "x/python"),
    ];
    let config = cli::run(
        cli::COMPOSE,
        &["-f", &shipped, "config"],
        Duration::from_secs(60),
        &env,
    )
    .expect("docker-compose 1.29 accepts docker-compose.yml");
    for (_, image) in env {
        assert!(
            config.contains(image),
            "build arg {image} not passed:\n{config}"
        );
    }

    let dir = cleanup.dir();
    let ports = Ports {
        http: free_port(),
        https: free_port(),
        admin: free_port(),
        apps: [free_port(), free_port(), free_port()],
    };
    let proxy = dir.join("proxy.yaml");
    std::fs::write(&proxy, proxy_yaml(&ports)).expect("write proxy.yaml");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&proxy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, loopback_compose(built, &ports, &proxy)).expect("write compose");
    let name = format!("rproxytest{}", std::process::id());
    let project = cleanup.project(&file, &name);

    let started = Instant::now();
    project
        .compose(&["up", "-d", "--no-build"], Duration::from_secs(240))
        .expect("docker-compose up");
    let rproxy = project.container("rproxy");
    wait_ready(&rproxy, ports.admin).await;
    say(&format!(
        "docker-compose up: three FastAPI workers healthy and rproxy ready in {:.1?}",
        started.elapsed()
    ));
    balancing(&ports).await;
    https_h2(&ports).await;
    sighup(project, &rproxy, &ports).await;
    stop(project, &rproxy);
    project
        .compose(&["down", "-v"], Duration::from_secs(120))
        .expect("docker-compose down -v");
}

async fn wait_ready(container: &str, admin: u16) {
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let client = crate::common::client();
    let ok = crate::common::wait_until(Duration::from_secs(60), || async {
        matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ok, "compose rproxy not ready:\n{}", cli::logs(container));
}

async fn hello(client: &reqwest::Client, url: &str) -> (reqwest::Version, serde_json::Value) {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let version = resp.version();
    (version, crate::common::json_body(resp).await)
}

/// Round robin over the three workers: every one answers a fair share.
async fn balancing(ports: &Ports) {
    let client = crate::common::client();
    let url = format!("http://127.0.0.1:{}/api/hello", ports.http);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for _ in 0..30 {
        let (_, body) = hello(&client, &url).await;
        let worker = body["worker"].as_u64().unwrap_or_else(|| panic!("{body}"));
        *counts.entry(worker).or_default() += 1;
    }
    let expected: Vec<u64> = ports.apps.iter().map(|p| u64::from(*p)).collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), {
        let mut e = expected.clone();
        e.sort_unstable();
        e
    });
    assert!(counts.values().all(|&n| n >= 5), "uneven: {counts:?}");
    say(&format!(
        "30 requests over the three workers (by port): {counts:?}"
    ));
}

async fn https_h2(ports: &Ports) {
    let client = crate::common::client_builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("https client");
    let (version, body) = hello(
        &client,
        &format!("https://127.0.0.1:{}/api/hello", ports.https),
    )
    .await;
    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(body["message"], "hello from FastAPI");
    say("HTTPS over HTTP/2 through the compose rproxy: 200");
}

/// `docker-compose kill -s HUP rproxy` reloads the configuration; the proxy keeps serving.
async fn sighup(project: &Project, rproxy: &str, ports: &Ports) {
    let before = count_sighup_reloads(rproxy);
    project
        .compose(&["kill", "-s", "HUP", "rproxy"], Duration::from_secs(30))
        .expect("docker-compose kill -s HUP");
    let ok = crate::common::wait_until(Duration::from_secs(15), || async {
        count_sighup_reloads(rproxy) > before
    })
    .await;
    assert!(ok, "no SIGHUP reload logged:\n{}", cli::logs(rproxy));
    assert_eq!(cli::inspect(rproxy, "{{.State.Running}}"), "true");
    let (_, body) = hello(
        &crate::common::client(),
        &format!("http://127.0.0.1:{}/api/hello", ports.http),
    )
    .await;
    assert!(body["worker"].is_u64(), "{body}");
    say("docker-compose kill -s HUP rproxy: `configuration reloaded (SIGHUP)`, still serving");
}

fn count_sighup_reloads(container: &str) -> usize {
    cli::logs(container)
        .matches("configuration reloaded (SIGHUP)")
        .count()
}

/// `docker-compose stop`: every container exits 0 within the grace period.
fn stop(project: &Project, rproxy: &str) {
    let out = project.compose(&["stop", "-t", "20"], Duration::from_secs(90));
    let took = out.took;
    out.expect("docker-compose stop");
    assert_eq!(
        cli::inspect(rproxy, "{{.State.ExitCode}}"),
        "0",
        "rproxy:\n{}",
        cli::logs(rproxy)
    );
    for app in ["app1", "app2", "app3"] {
        let id = project.container(app);
        assert_eq!(cli::inspect(&id, "{{.State.ExitCode}}"), "0", "{app}");
    }
    say(&format!(
        "docker-compose stop: rproxy and the three workers exited 0 in {took:.1?}"
    ));
}
