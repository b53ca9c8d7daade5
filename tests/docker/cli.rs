//! The Docker and docker-compose command lines as the test uses them: every command under a
//! deadline, its output kept for the failure message, and a guard that removes every
//! container, compose project and image the test made, also when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's CLI: it carries BuildKit's client (a newer CLI on PATH may want the buildx plugin).
pub const DOCKER: &str = "/usr/bin/docker";
pub const COMPOSE: &str = "docker-compose";

/// What a command did.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout, trimmed; panics with everything the command said when it failed.
    pub fn expect(self, what: &str) -> String {
        assert!(
            self.ok(),
            "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self.stdout.trim().to_string()
    }
}

/// Runs `program args..` with a deadline (coreutils `timeout`, then SIGKILL 5 s later).
pub fn run(program: &str, args: &[&str], deadline: Duration, env: &[(&str, &str)]) -> Out {
    let start = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5")
        .arg(deadline.as_secs().max(1).to_string())
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// `docker args..` with a deadline.
pub fn docker(args: &[&str], deadline: Duration) -> Out {
    run(DOCKER, args, deadline, &[])
}

/// `docker inspect -f FORMAT target`, trimmed.
pub fn inspect(target: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, target], Duration::from_secs(30))
        .expect(&format!("docker inspect {target}"))
}

/// A container's log (stdout and stderr), for failure messages and log checks.
pub fn logs(container: &str) -> String {
    let out = docker(&["logs", container], Duration::from_secs(30));
    format!("{}{}", out.stdout, out.stderr)
}

/// A compose project the test started: its file and name.
pub struct Project {
    pub file: PathBuf,
    pub name: String,
}

impl Project {
    /// `docker-compose -p NAME -f FILE args..` with a deadline.
    pub fn compose(&self, args: &[&str], deadline: Duration) -> Out {
        let file = self.file.display().to_string();
        let mut all = vec!["-p", self.name.as_str(), "-f", file.as_str()];
        all.extend_from_slice(args);
        run(COMPOSE, &all, deadline, &[])
    }

    /// The id of the container of `service`.
    pub fn container(&self, service: &str) -> String {
        self.compose(&["ps", "-q", service], Duration::from_secs(30))
            .expect(&format!("compose ps {service}"))
    }
}

/// Removes what the test made when dropped: containers (with their anonymous volumes), compose
/// projects (with their volumes), images. The local base images are kept for the next run.
/// Temporary directories (compose files, mounted configurations) live as long as the guard, so
/// that `down` still finds its file.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    projects: Vec<Project>,
    images: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cleanup {
    pub fn container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }

    pub fn project(&mut self, file: &Path, name: &str) -> &Project {
        self.projects.push(Project {
            file: file.to_path_buf(),
            name: name.to_string(),
        });
        self.projects.last().expect("just pushed")
    }

    pub fn image(&mut self, tag: &str) {
        self.images.push(tag.to_string());
    }

    /// A new temporary directory, removed after everything else.
    pub fn dir(&mut self) -> PathBuf {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let long = Duration::from_secs(120);
        for p in &self.projects {
            let _ = p.compose(&["down", "-v", "-t", "5"], long);
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c], long);
        }
        for i in &self.images {
            let _ = docker(&["rmi", i], long);
        }
    }
}
