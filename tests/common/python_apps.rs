//! Real Python servers for the tests that need an app's own view of a request: ASGI apps under
//! uvicorn or Hypercorn (`examples/fastapi/app.py`, `tests/apps/*.py`) and grpcio services.
//! Needs `python3` with what `.ci/run` installs (FastAPI, uvicorn, Hypercorn, grpcio); without
//! it a test fails, it never skips.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{client, free_port, POLL};

/// Fails the test (never skips it) when FastAPI or uvicorn cannot be imported.
pub fn require_python_deps() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fastapi, uvicorn, hypercorn, grpc, grpc_health",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the tests' Python servers are not importable by python3: install them with \
             `python3 -m pip install -r examples/fastapi/requirements.txt -r \
             tests/apps/requirements.txt` (.ci/run does)\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run python3 ({e}): the FastAPI tests need it"),
    }
}

/// A directory of the repository.
pub fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One Python server process on a free port of 127.0.0.1; killed when dropped.
pub struct PyApp {
    pub port: u16,
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl PyApp {
    /// `python3 <args>` in `dir`, where `{port}` in an argument is the port chosen.
    pub fn spawn(dir: &Path, args: &[&str]) -> PyApp {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("app log file");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new("python3")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log.path()).expect("app log"))
            .spawn()
            .expect("spawn python3");
        PyApp { port, child, log }
    }

    /// uvicorn serving `app` (`module:attr`) from `dir`.
    pub fn uvicorn(dir: &Path, app: &str) -> PyApp {
        PyApp::spawn(
            dir,
            &[
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--log-level",
                "warning",
            ],
        )
    }

    /// Hypercorn serving `app` from `dir` (HTTP/1.1 and h2c; with `extra` such as
    /// `--certfile`/`--keyfile`, TLS with ALPN h2).
    pub fn hypercorn(dir: &Path, app: &str, extra: &[&str]) -> PyApp {
        let mut args = vec!["-m", "hypercorn", app, "--bind", "127.0.0.1:{port}"];
        args.extend_from_slice(extra);
        PyApp::spawn(dir, &args)
    }

    /// Waits until the port accepts connections (30 s at most).
    pub async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "nothing listens on port {} after 30 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "the app on port {} exited with {status}:\n{}",
                self.port,
                self.log()
            );
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits until `GET /health` answers 200 (30 s at most); panics with the app's log if it
    /// exits or never does.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.assert_running();
            let ok = client()
                .get(self.url("/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the app on port {} not healthy after 30 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `n` uvicorn workers of `examples/fastapi/app.py`, each healthy, and their `ip:port`s.
pub async fn fastapi_workers(n: usize) -> (Vec<PyApp>, Vec<String>) {
    require_python_deps();
    let dir = repo_dir("examples/fastapi");
    let mut workers: Vec<PyApp> = (0..n).map(|_| PyApp::uvicorn(&dir, "app:app")).collect();
    for w in &mut workers {
        w.wait_healthy().await;
    }
    let servers = workers
        .iter()
        .map(|w| format!("127.0.0.1:{}", w.port))
        .collect();
    (workers, servers)
}

impl Drop for PyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
