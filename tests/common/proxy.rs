//! The `rproxy` process under test: [`ProxyBuilder`] writes `proxy.yaml` into a temp dir and
//! starts the binary on free ports; [`Proxy`] waits for `/readyz` and kills the child on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{bin, client, free_port, raw_request, POLL, READY_TIMEOUT};

/// Builds a `proxy.yaml` in a temp dir and starts `rproxy -c` on it.
///
/// The harness writes `server:` (threads 2, short grace period, plus [`ProxyBuilder::server`]
/// lines), `listen:` (http + admin, and https when asked) and `tls:` when https is on; the test
/// supplies the rest (`upstreams:`, `routes:`) through [`ProxyBuilder::yaml`].
pub struct ProxyBuilder {
    dir: TempDir,
    server_extra: Vec<String>,
    https: bool,
    tls_yaml: Option<String>,
    body: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    wait_ready: bool,
    proxy_protocol: bool,
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyBuilder {
    pub fn new() -> Self {
        ProxyBuilder {
            dir: tempfile::Builder::new()
                .prefix("rproxy-test")
                .tempdir()
                .expect("tempdir"),
            server_extra: Vec::new(),
            https: false,
            tls_yaml: None,
            body: String::new(),
            env: Vec::new(),
            args: Vec::new(),
            wait_ready: true,
            proxy_protocol: false,
        }
    }

    /// The temp dir that will hold `proxy.yaml` (write static files, certs, ... here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` inside the temp dir, creating parent directories.
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        write_file(self.dir.path(), rel, contents.as_ref());
        self
    }

    /// An extra `key: value` line under `server:` (e.g. `"header_timeout: 1s"`).
    pub fn server(mut self, line: &str) -> Self {
        self.server_extra.push(line.to_string());
        self
    }

    /// Adds an https listener; `tls:` defaults to `{certs: certs, redirect_http: false,
    /// self_signed: true}` unless [`ProxyBuilder::tls`] gives it.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// The whole `tls:` block (without the `tls:` key), indented by the caller as a mapping body,
    /// e.g. `"  certs: certs\n  redirect_http: true\n"`.
    pub fn tls(mut self, block: &str) -> Self {
        self.tls_yaml = Some(block.to_string());
        self
    }

    /// The rest of the file: `upstreams:`, `routes:`.
    pub fn yaml(mut self, body: &str) -> Self {
        self.body.push_str(body);
        if !self.body.ends_with('\n') {
            self.body.push('\n');
        }
        self
    }

    /// An environment variable for the child only (tests never call `set_var`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// An extra command-line argument for the child (e.g. `--log-format`, then `json`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// The http and https listeners take PROXY protocol headers (`proxy_protocol: true`).
    pub fn proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    /// Don't wait for `/readyz` (for tests that expect startup to fail).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Writes the YAML, spawns the binary and waits until `/readyz` answers 200.
    pub async fn start(self) -> Proxy {
        let http = free_port();
        let https = if self.https { Some(free_port()) } else { None };
        let admin = free_port();

        let mut yaml = String::new();
        yaml.push_str("server:\n  threads: 2\n  grace_period: 1s\n");
        // `RPROXY_TEST_ENGINE=pingora` runs the suite with every request on pingora's path
        // (`.ci/run` runs it both ways); a test that sets `fast_path` itself keeps its own.
        let pinned = self.server_extra.iter().any(|l| l.starts_with("fast_path"));
        if !pinned && std::env::var("RPROXY_TEST_ENGINE").is_ok_and(|e| e == "pingora") {
            yaml.push_str("  fast_path: false\n");
        }
        for line in &self.server_extra {
            yaml.push_str(&format!("  {line}\n"));
        }
        yaml.push_str("listen:\n");
        let listen = |port: u16| match self.proxy_protocol {
            true => format!("{{ addr: \"127.0.0.1:{port}\", proxy_protocol: true }}"),
            false => format!("\"127.0.0.1:{port}\""),
        };
        yaml.push_str(&format!("  http: {}\n", listen(http)));
        if let Some(p) = https {
            yaml.push_str(&format!("  https: {}\n", listen(p)));
        }
        yaml.push_str(&format!("  admin: \"127.0.0.1:{admin}\"\n"));
        match (&self.tls_yaml, self.https) {
            (Some(block), _) => {
                yaml.push_str("tls:\n");
                yaml.push_str(block);
                if !block.ends_with('\n') {
                    yaml.push('\n');
                }
            }
            (None, true) => {
                std::fs::create_dir_all(self.dir.path().join("certs")).expect("mkdir certs");
                yaml.push_str(
                    "tls:\n  certs: certs\n  redirect_http: false\n  self_signed: true\n",
                );
            }
            (None, false) => {}
        }
        yaml.push_str(&self.body);

        let config = self.dir.path().join("proxy.yaml");
        std::fs::write(&config, &yaml).expect("write proxy.yaml");

        let stderr_path = self.dir.path().join("stderr.log");
        let stdout_path = self.dir.path().join("stdout.log");
        let mut cmd = Command::new(bin());
        cmd.arg("-c")
            .arg(&config)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        if std::env::var_os("RPROXY_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RPROXY_LOG", "info");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rproxy");

        let mut proxy = Proxy {
            child: Some(child),
            dir: self.dir,
            config,
            yaml,
            http,
            https,
            admin,
        };
        if self.wait_ready {
            proxy.wait_ready().await;
        }
        proxy
    }
}

/// Writes `contents` to `base/rel`, creating parent directories.
pub fn write_file(base: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let path = base.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dirs");
    }
    std::fs::write(&path, contents).expect("write file");
    path
}

/// A running `rproxy`; killed when dropped.
pub struct Proxy {
    pub(super) child: Option<Child>,
    pub(super) dir: TempDir,
    pub config: PathBuf,
    pub yaml: String,
    pub http: u16,
    pub https: Option<u16>,
    pub admin: u16,
}

impl Proxy {
    /// Shorthand for `ProxyBuilder::new().yaml(body).start()`.
    pub async fn start(body: &str) -> Proxy {
        ProxyBuilder::new().yaml(body).start().await
    }

    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::new()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https.expect("no https listener")))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }

    /// `http://127.0.0.1:<http><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http, path)
    }

    /// `http://127.0.0.1:<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin, path)
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The child's pid (for signal tests).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// `Some(status)` once the child exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits (bounded) for the child to exit and returns its status; `None` on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `/readyz` until 200; panics (printing the proxy's stderr) on exit or timeout.
    pub async fn wait_ready(&mut self) {
        let client = client();
        let url = self.admin_url("/readyz");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "rproxy exited early with {status}\n--- proxy.yaml ---\n{}\n--- stderr ---\n{}",
                    self.yaml,
                    self.stderr()
                );
            }
            if let Ok(resp) = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "rproxy not ready after {READY_TIMEOUT:?}\n--- proxy.yaml ---\n{}\n--- stderr ---\n{}",
                    self.yaml,
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /metrics` on the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// A GET through the http listener with the given `Host` header.
    pub async fn get_host(&self, host: &str, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {host}{path}: {e}\n--- stderr ---\n{}", self.stderr()))
    }

    /// A GET through the http listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n--- stderr ---\n{}", self.stderr()))
    }

    /// Sends a raw request to the http listener (see [`raw_request`]).
    pub async fn raw(&self, bytes: &[u8]) -> String {
        raw_request(self.http_addr(), bytes).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- rproxy stderr (test panicked) ---\n{}", self.stderr());
        }
    }
}

/// Runs `rproxy -t -c <path>` and returns its output.
pub fn check_config(path: &Path) -> Output {
    Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run rproxy -t")
}

/// Runs `rproxy -t -c <path>` with extra environment variables.
pub fn check_config_env(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("-t").arg("-c").arg(path).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rproxy -t")
}
