//! Starting rproxy on a whole `proxy.yaml` written by the test, for tests that need keys the
//! [`ProxyBuilder`](super::ProxyBuilder) writes itself (such as `server.grace_period`). The
//! result is an ordinary [`Proxy`]: same readiness wait, logs, signals and cleanup.

use std::fs::File;
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{bin, free_port, Proxy};

/// The ports a whole-file proxy listens on; the test's YAML must use them.
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub admin: u16,
}

impl Ports {
    /// Three ports from [`free_port`], picked before anything starts (so another process, such
    /// as an ACME server that must validate against this proxy, can be told about them).
    pub fn free() -> Ports {
        Ports {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
        }
    }
}

/// Writes `make(&ports)` as `proxy.yaml` in a temp dir (after `prepare` has put other files
/// there), starts `rproxy -c` on it and waits for `/readyz`. The YAML decides whether the https
/// port is used; [`Proxy::https`] is set when it mentions it.
pub async fn start_whole(
    prepare: impl FnOnce(&std::path::Path),
    make: impl FnOnce(&Ports) -> String,
) -> Proxy {
    let dir = tempfile::Builder::new()
        .prefix("rproxy-test")
        .tempdir()
        .expect("tempdir");
    prepare(dir.path());
    let ports = Ports::free();
    let yaml = make(&ports);
    start_whole_in(dir, &ports, yaml).await
}

/// Writes `yaml` as `proxy.yaml` into `dir` (which the returned proxy owns from now on), starts
/// `rproxy -c` on it and waits for `/readyz`. `yaml` must listen on `ports`.
pub async fn start_whole_in(dir: TempDir, ports: &Ports, yaml: String) -> Proxy {
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, &yaml).expect("write proxy.yaml");

    let mut cmd = Command::new(bin());
    cmd.arg("-c")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(File::create(dir.path().join("stdout.log")).expect("stdout file"))
        .stderr(File::create(dir.path().join("stderr.log")).expect("stderr file"));
    if std::env::var_os("RPROXY_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RPROXY_LOG", "info");
    }
    let child = cmd.spawn().expect("spawn rproxy");

    let https = yaml
        .contains(&format!(":{}", ports.https))
        .then_some(ports.https);
    let mut proxy = Proxy {
        child: Some(child),
        dir,
        config,
        yaml,
        http: ports.http,
        https,
        admin: ports.admin,
    };
    proxy.wait_ready().await;
    proxy
}
