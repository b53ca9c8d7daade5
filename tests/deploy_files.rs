//! The deployment files agree with what rproxy does: every shipped YAML file parses, every
//! shipped `proxy.yaml` (including the Kubernetes ConfigMap's) passes `rproxy -t`, the
//! manifests, compose file, Dockerfile and systemd unit use the contract's probes, signals and
//! paths, and the Prometheus rules and Grafana dashboard use only the contract's metric names.
//! Docker and Kubernetes are not needed: these tests read the files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_yaml::Value;

/// Where the image and the Kubernetes pod keep configuration and certificates.
const CONFIG_PATH: &str = "/etc/rproxy/proxy.yaml";
const CERTS_DIR: &str = "/etc/rproxy/certs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every document of a (multi-document) YAML text; empty documents are skipped.
fn yaml_docs(text: &str, name: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: document {i}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(rel: &str) -> Value {
    let mut docs = yaml_docs(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

fn int(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {v:?}"))
}

/// `.yml` / `.yaml` files under `dir`, recursively.
fn yaml_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            // A Helm chart's templates are Go templates, not YAML: helm.rs renders and checks
            // them.
            if path.ends_with("templates") && path.with_file_name("Chart.yaml").exists() {
                continue;
            }
            yaml_files_under(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(path);
        }
    }
}

/// A duration as proxy.yaml and compose write it (`25s`), read by rproxy's own parser.
fn duration(v: &Value, what: &str) -> std::time::Duration {
    serde_yaml::from_value::<rproxy::config::model::Dur>(v.clone())
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .0
}

/// A shipped proxy.yaml, parsed by rproxy itself.
fn proxy_config(text: &str, name: &str) -> rproxy::config::Config {
    rproxy::config::load_str(text, name, &|_| None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[path = "deploy_files/controller.rs"]
mod controller;
#[path = "deploy_files/helm.rs"]
mod helm;
#[path = "deploy_files/kubernetes.rs"]
mod kubernetes;
#[path = "deploy_files/monitoring.rs"]
mod monitoring;

// ---------------------------------------------------------------------------------------------
// Every YAML file parses.

#[test]
fn every_shipped_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files_under(&root().join("deploy"), &mut files);
    yaml_files_under(&root().join("examples"), &mut files);
    files.push(root().join("docker-compose.yml"));
    files.push(root().join("proxy.yaml"));
    let rel = |p: &PathBuf| {
        p.strip_prefix(root())
            .expect("under the repo")
            .display()
            .to_string()
    };
    let names: BTreeSet<String> = files.iter().map(rel).collect();
    for expected in [
        "proxy.yaml",
        "docker-compose.yml",
        "deploy/docker/proxy.yaml",
        "deploy/kubernetes/rproxy.yaml",
        "deploy/kubernetes/fastapi.yaml",
        "examples/fastapi/proxy.yaml",
        "examples/prometheus/prometheus.yml",
        "examples/prometheus/rproxy-alerts.yml",
    ] {
        assert!(names.contains(expected), "{expected} is missing");
    }
    for path in &files {
        let name = rel(path);
        let text = std::fs::read_to_string(path).expect("read");
        assert!(!yaml_docs(&text, &name).is_empty(), "{name}: no document");
    }
}

// ---------------------------------------------------------------------------------------------
// Every shipped proxy.yaml passes `rproxy -t`.

/// Runs `rproxy -t` on a shipped configuration and expects `ok`.
///
/// Only paths are rewritten, nothing else: a configuration written for the image or the pod
/// points `tls.certs` at `/etc/rproxy/certs`, which `-t` wants to exist, so such a file is
/// checked as a copy in a temporary directory with that path replaced by a temporary certs
/// directory. A file without such paths is checked where it is, so that its relative paths
/// (`static: examples/site`) resolve as they do for a user. Upstream host names (`fastapi:8000`,
/// `app1:8000`) are left alone: they do not resolve here, and `-t` must accept them, since DNS
/// upstreams are resolved again at runtime.
fn assert_check_passes(name: &str, text: &str, original: Option<&Path>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = match original {
        Some(p) if !text.contains("/etc/rproxy/") => p.to_path_buf(),
        _ => {
            let certs = tmp.path().join("certs");
            std::fs::create_dir(&certs).expect("certs dir");
            let rewritten = text.replace(CERTS_DIR, &certs.display().to_string());
            let path = tmp.path().join("proxy.yaml");
            std::fs::write(&path, rewritten).expect("write proxy.yaml");
            path
        }
    };
    let out = Command::new(env!("CARGO_BIN_EXE_rproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run rproxy -t");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "{name}: `rproxy -t` failed ({}):\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn shipped_proxy_yaml_files_pass_check() {
    for rel in [
        "proxy.yaml",
        "examples/fastapi/proxy.yaml",
        "deploy/docker/proxy.yaml",
    ] {
        assert_check_passes(rel, &read(rel), Some(&root().join(rel)));
    }
}

// ---------------------------------------------------------------------------------------------
// Docker.

/// Dockerfile instructions: continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (cmd, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((cmd.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

fn last<'a>(instructions: &'a [(String, String)], cmd: &str) -> &'a str {
    instructions
        .iter()
        .rev()
        .find(|(c, _)| c == cmd)
        .map(|(_, rest)| rest.as_str())
        .unwrap_or_else(|| panic!("no {cmd}"))
}

fn assert_non_root_user(user: &str, file: &str) {
    let who = user.split(':').next().unwrap_or(user);
    assert!(
        !who.is_empty() && who != "root" && who != "0",
        "{file}: USER {user} is root"
    );
}

#[test]
fn dockerfile_runs_non_root_and_drains_on_sigterm() {
    let text = read("Dockerfile");
    let ins = dockerfile_instructions(&text);
    assert_non_root_user(last(&ins, "USER"), "Dockerfile");
    assert_eq!(last(&ins, "STOPSIGNAL"), "SIGTERM");
    let exposed: BTreeSet<&str> = ins
        .iter()
        .filter(|(c, _)| c == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["80", "443", "9901"]));
    assert_eq!(last(&ins, "ENTRYPOINT"), r#"["rproxy"]"#);
    assert_eq!(
        last(&ins, "CMD"),
        format!(r#"["-c", "{CONFIG_PATH}"]"#).as_str()
    );
    // No VOLUME: every `docker run` without --rm would leave an anonymous volume behind (the
    // docs name a volume for the certs instead).
    assert!(
        !ins.iter().any(|(c, _)| c == "VOLUME"),
        "the Dockerfile declares a VOLUME"
    );
    assert!(text.contains(&format!("rproxy-certs:{CERTS_DIR}")));
    // The health check is rproxy's own (the image has no curl), on the contract's /readyz.
    assert!(
        last(&ins, "HEALTHCHECK").contains(r#"CMD ["rproxy", "healthcheck""#),
        "HEALTHCHECK {}",
        last(&ins, "HEALTHCHECK")
    );
    // No `# syntax=` line: it makes every build fetch a frontend from a registry.
    assert!(!text
        .lines()
        .any(|l| l.to_lowercase().replace(' ', "").starts_with("#syntax=")));
    // Base images are build args, so a mirror's or a locally made image can stand in.
    for arg in ["RUST_IMAGE", "RUNTIME_IMAGE"] {
        assert!(
            ins.iter()
                .any(|(c, rest)| c == "ARG" && rest.starts_with(&format!("{arg}="))),
            "ARG {arg}"
        );
    }
    assert!(
        ins.iter()
            .any(|(c, rest)| c == "COPY" && rest.ends_with(&format!(" {CONFIG_PATH}"))),
        "the image carries a default {CONFIG_PATH}"
    );
    assert!(text.contains("cargo build --release --locked"));
    let froms: Vec<&str> = ins
        .iter()
        .filter(|(c, _)| c == "FROM")
        .map(|(_, r)| r.as_str())
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");

    // The build context keeps what the Dockerfile copies and drops target/.
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(
        patterns.contains(&"target"),
        ".dockerignore keeps target/ out"
    );
    for copied in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "deploy/docker/proxy.yaml",
    ] {
        let ignored = patterns
            .iter()
            .any(|p| copied == *p || copied.starts_with(&format!("{p}/")));
        assert!(
            !ignored,
            ".dockerignore drops {copied}, which the image needs"
        );
    }

    let app = dockerfile_instructions(&read("examples/fastapi/Dockerfile"));
    assert_non_root_user(last(&app, "USER"), "examples/fastapi/Dockerfile");
    assert_eq!(last(&app, "FROM"), "${PYTHON_IMAGE}");
    assert!(last(&app, "ARG").starts_with("PYTHON_IMAGE="));
    assert!(last(&app, "CMD").contains(r#""uvicorn", "app:app""#));
}

#[test]
fn compose_runs_the_apps_its_proxy_yaml_names() {
    let compose = yaml_file("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let proxy = &compose["services"]["rproxy"];
    assert!(!proxy.is_null(), "a service named rproxy");

    let volumes: Vec<&str> = seq(&proxy["volumes"], "rproxy volumes")
        .iter()
        .map(|v| str_of(v, "volume"))
        .collect();
    let config_mount = format!("./deploy/docker/proxy.yaml:{CONFIG_PATH}");
    assert!(
        volumes.iter().any(|v| v.starts_with(&config_mount)),
        "{volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(&format!(":{CERTS_DIR}"))),
        "{volumes:?}"
    );
    let ports: Vec<&str> = seq(&proxy["ports"], "rproxy ports")
        .iter()
        .map(|p| str_of(p, "port"))
        .collect();
    for inner in ["80", "443", "9901"] {
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{inner}"))),
            "port {inner} is not published: {ports:?}"
        );
    }
    let admin = ports.iter().find(|p| p.ends_with(":9901")).expect("admin");
    assert!(
        admin.starts_with("127.0.0.1:"),
        "admin published on loopback only"
    );
    assert_eq!(proxy["stop_signal"], "SIGTERM");
    // One file for compose v2 and Debian's docker-compose 1.29, which rejects a top-level name.
    assert!(compose["name"].is_null(), "a top-level `name:`");
    for arg in ["RUST_IMAGE", "RUNTIME_IMAGE"] {
        let value = str_of(&proxy["build"]["args"][arg], arg);
        assert!(value.starts_with(&format!("${{{arg}:-")), "{arg}: {value}");
    }

    // Every upstream server of the compose proxy.yaml is a compose service listening there,
    // and compose waits longer than rproxy's grace period before killing it.
    let text = read("deploy/docker/proxy.yaml");
    let config = proxy_config(&text, "deploy/docker/proxy.yaml");
    let app_dockerfile = read("examples/fastapi/Dockerfile");
    for upstream in config.upstreams.values() {
        for server in &upstream.servers {
            let (host, port) = server.addr.rsplit_once(':').expect("host:port");
            let service = &compose["services"][host];
            assert!(!service.is_null(), "{host} is not a compose service");
            assert!(
                app_dockerfile.contains(&format!("\"--port\", \"{port}\"")),
                "{host} does not listen on {port}"
            );
            assert_eq!(service["build"]["context"], "examples/fastapi");
            assert_eq!(
                service["build"]["args"]["PYTHON_IMAGE"],
                "${PYTHON_IMAGE:-python:3.11-slim}"
            );
        }
    }
    let stop = duration(&proxy["stop_grace_period"], "stop_grace_period");
    assert!(
        stop > config.server.grace_period.0,
        "stop_grace_period {stop:?} <= server.grace_period"
    );
    assert!(services.len() >= 4, "rproxy and three apps");
}

// ---------------------------------------------------------------------------------------------
// systemd.

#[test]
fn systemd_unit_reloads_with_hup_and_stops_with_term() {
    let text = read("examples/systemd/rproxy.service");
    let values = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let one = |key: &str| -> String {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };
    assert_eq!(
        one("ExecStart"),
        format!("/usr/local/bin/rproxy -c {CONFIG_PATH}")
    );
    assert!(
        values("ExecReload")
            .iter()
            .any(|v| v == "/bin/kill -HUP $MAINPID"),
        "ExecReload sends SIGHUP: {:?}",
        values("ExecReload")
    );
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert!(!one("TimeoutStopSec").is_empty());
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("AmbientCapabilities").contains("CAP_NET_BIND_SERVICE"));
    let user = one("User");
    assert!(user != "root" && user != "0", "User={user}");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(one("ReadWritePaths")
        .split_whitespace()
        .any(|p| p == CERTS_DIR));
}
