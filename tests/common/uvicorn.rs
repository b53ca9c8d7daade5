//! Real ASGI apps under uvicorn for the tests that need an app's own view of a request:
//! `examples/fastapi/app.py` and the apps in `tests/apps/`. Needs `python3` with FastAPI and
//! uvicorn (`.ci/run` installs them); without them a test fails, it never skips.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{client, free_port, POLL};

/// Fails the test (never skips it) when FastAPI or uvicorn cannot be imported.
pub fn require_python_deps() {
    let out = Command::new("python3")
        .args(["-c", "import fastapi, uvicorn"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "FastAPI/uvicorn are not importable by python3: install them with \
             `python3 -m pip install -r examples/fastapi/requirements.txt` (.ci/run does)\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run python3 ({e}): the FastAPI tests need it"),
    }
}

/// A directory of the repository.
pub fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One uvicorn process serving `app` (`module:attr`) from `dir`; killed when dropped.
pub struct Uvicorn {
    pub port: u16,
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Uvicorn {
    pub fn spawn(dir: &Path, app: &str) -> Uvicorn {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("uvicorn log file");
        let child = Command::new("python3")
            .args(["-m", "uvicorn", app, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--log-level", "warning"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log.path()).expect("uvicorn log"))
            .spawn()
            .expect("spawn uvicorn");
        Uvicorn { port, child, log }
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
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "uvicorn on port {} exited with {status}:\n{}",
                    self.port,
                    self.log()
                );
            }
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
                "uvicorn on port {} not healthy after 30 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
