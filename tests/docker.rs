//! The Docker image and the compose stack, built and run for real: `tests/docker/prepare.sh`
//! readies the engine and the base images (made locally with debootstrap when no registry
//! answers), the project's own Dockerfiles are built once with build args, then the image is run
//! with `--network host` on loopback ports (image.rs) and the compose file brings up rproxy and
//! three FastAPI workers (compose.rs). Where Docker cannot run, the test prints why and skips.
//!
//! Runs once: the pingora-path pass of `.ci/run` (`RPROXY_TEST_ENGINE` set) skips it, saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "docker/cli.rs"]
mod cli;
#[allow(unused_imports)]
#[path = "common/mod.rs"]
mod common;
#[path = "docker/compose.rs"]
mod compose;
#[path = "docker/image.rs"]
mod image;

use cli::{docker, Cleanup};

/// Says something on the terminal even though the harness captures the test's output: a skip
/// must not pass silently, and the observations belong in the CI log.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "docker test: {line}");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The base images to build with (`--build-arg`).
pub struct Bases {
    pub rust: String,
    pub runtime: String,
    pub python: String,
}

/// Runs prepare.sh: Ok with the base images, Err with the reason Docker cannot run here.
fn prepare() -> Result<Bases, String> {
    let script = root().join("tests/docker/prepare.sh");
    let out = cli::run(
        "bash",
        &[&script.display().to_string()],
        Duration::from_secs(900),
        &[],
    );
    if out.code == Some(77) {
        return Err(out.stderr.trim().to_string());
    }
    let last = out.expect("tests/docker/prepare.sh");
    let last = last.lines().last().unwrap_or_default();
    let field = |key: &str| {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("prepare.sh said no {key}: {last}"))
            .to_string()
    };
    Ok(Bases {
        rust: field("RUST_IMAGE"),
        runtime: field("RUNTIME_IMAGE"),
        python: field("PYTHON_IMAGE"),
    })
}

/// The host's CA bundle as a build secret, when there is one (registries behind a TLS proxy).
fn ca_secret() -> Option<String> {
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    bundle
        .is_file()
        .then(|| format!("id=ca-certificates,src={}", bundle.display()))
}

/// `docker build` of `context` as `tag` with build args; returns how long it took.
fn build(context: &Path, tag: &str, args: &[(&str, &str)]) -> Duration {
    let context = context.display().to_string();
    let mut argv: Vec<String> = [
        "build",
        "--network",
        "host",
        "--progress",
        "plain",
        "-t",
        tag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(secret) = ca_secret() {
        argv.extend(["--secret".to_string(), secret]);
    }
    for (k, v) in args {
        argv.extend(["--build-arg".to_string(), format!("{k}={v}")]);
    }
    argv.push(context);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = cli::run(
        cli::DOCKER,
        &argv,
        Duration::from_secs(1500),
        &[("DOCKER_BUILDKIT", "1")],
    );
    let took = out.took;
    if !out.ok() {
        let tail: Vec<&str> = out.stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "docker build {tag}: exit {:?}\n{}",
            out.code,
            tail.join("\n")
        );
    }
    took
}

/// The images this run built, shared by the image checks and the compose stack.
pub struct Built {
    pub rproxy: String,
    pub fastapi: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_and_compose_stack() {
    if let Ok(engine) = std::env::var("RPROXY_TEST_ENGINE") {
        say(&format!(
            "skipped in this pass (RPROXY_TEST_ENGINE={engine}): the image does not depend on \
             the engine, and it is built and run once, in the first pass"
        ));
        return;
    }
    let started = Instant::now();
    let bases = match prepare() {
        Ok(b) => b,
        Err(reason) => {
            say(&format!("SKIPPED: {reason}"));
            return;
        }
    };
    say(&format!(
        "engine ready, bases {} / {} / {} ({:.0?})",
        bases.rust,
        bases.runtime,
        bases.python,
        started.elapsed()
    ));

    let mut cleanup = Cleanup::default();
    let id = std::process::id();
    let built = Built {
        rproxy: format!("rproxy-test:{id}"),
        fastapi: format!("rproxy-fastapi-test:{id}"),
    };
    cleanup.image(&built.rproxy);
    cleanup.image(&built.fastapi);
    let took = build(
        &root(),
        &built.rproxy,
        &[
            ("RUST_IMAGE", bases.rust.as_str()),
            ("RUNTIME_IMAGE", bases.runtime.as_str()),
        ],
    );
    let size: u64 = cli::inspect(&built.rproxy, "{{.Size}}")
        .parse()
        .expect("image size");
    say(&format!(
        "built {} in {:.1?}: {:.1} MB",
        built.rproxy,
        took,
        size as f64 / 1e6
    ));
    assert!(size < 100_000_000, "the image is {size} bytes, over 100 MB");
    let took = build(
        &root().join("examples/fastapi"),
        &built.fastapi,
        &[("PYTHON_IMAGE", bases.python.as_str())],
    );
    say(&format!("built {} in {:.1?}", built.fastapi, took));

    image::check(&built, &mut cleanup).await;
    compose::check(&built, &mut cleanup).await;
    drop(cleanup);
    nothing_left_behind(id, &built);
    say(&format!("done in {:.1?}", started.elapsed()));
}

/// The guard removed every container, volume and image this run made.
fn nothing_left_behind(id: u32, built: &Built) {
    let list = |args: &[&str]| docker(args, Duration::from_secs(30)).expect("docker ls");
    for name in [format!("rproxy-test-{id}"), format!("rproxytest{id}")] {
        let filter = format!("name={name}");
        let containers = list(&["ps", "-a", "-q", "--filter", &filter]);
        assert!(
            containers.is_empty(),
            "containers left behind: {containers}"
        );
        let volumes = list(&["volume", "ls", "-q", "--filter", &filter]);
        assert!(volumes.is_empty(), "volumes left behind: {volumes}");
    }
    for image in [&built.rproxy, &built.fastapi] {
        let out = docker(&["image", "inspect", image], Duration::from_secs(30));
        assert!(!out.ok(), "image left behind: {image}");
    }
}
