//! The rproxy image run as a sidecar would run it: `--network host`, listeners on loopback
//! ports, a real upstream on the host, the configuration bind-mounted from a file. Checks
//! traffic (HTTP/1.1 and HTTPS over h2), `/healthz`, `/readyz`, the image's HEALTHCHECK, the
//! user, a hot reload of the mounted file, a drain on `docker stop`, `--read-only` with
//! `--cap-drop ALL`, and that no anonymous volume is made.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{self, docker, inspect, Cleanup};
use crate::common::{free_port, Upstream};
use crate::{say, Built};

/// Loopback ports for one container.
struct Ports {
    http: u16,
    https: u16,
    admin: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
        }
    }
}

fn config(ports: &Ports, upstream: &str) -> String {
    format!(
        r#"server:
  grace_period: 10s
listen:
  http: "127.0.0.1:{}"
  https: "127.0.0.1:{}"
  admin: "127.0.0.1:{}"
tls:
  certs: /etc/rproxy/certs
  redirect_http: false
upstreams:
  app:
    servers: ["{upstream}"]
    health: {{ path: /health, interval: 1s, timeout: 1s, rise: 1, fall: 2 }}
routes:
  - path: /
    upstream: app
"#,
        ports.http, ports.https, ports.admin
    )
}

/// Writes a configuration file the container's user (uid 10001) can read. An existing file is
/// rewritten in place (same inode), as an editor that keeps the file does: a bind-mounted file
/// follows its inode.
fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write proxy.yaml");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn https_client() -> reqwest::Client {
    crate::common::client_builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("https client")
}

/// `docker run -d --network host` with `extra` flags, the config file mounted; the container
/// is registered for cleanup. Returns the container's name.
fn start(
    built: &Built,
    cleanup: &mut Cleanup,
    name: &str,
    config: &Path,
    extra: &[&str],
) -> String {
    let name = format!("rproxy-test-{}-{name}", std::process::id());
    cleanup.container(&name);
    let mount = format!("{}:/etc/rproxy/proxy.yaml:ro", config.display());
    let mut args = vec!["run", "-d", "--name", &name, "--network", "host"];
    args.extend_from_slice(extra);
    args.extend(["-v", &mount, &built.rproxy]);
    docker(&args, Duration::from_secs(60)).expect("docker run");
    name
}

/// Waits for `/readyz` to answer 200; panics with the container's log if it exits or the wait
/// runs out.
async fn wait_ready(container: &str, admin: u16, within: Duration) -> Duration {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let client = crate::common::client();
    while started.elapsed() < within {
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status() == 200 {
                return started.elapsed();
            }
        }
        if inspect(container, "{{.State.Running}}") != "true" {
            panic!("{container} exited:\n{}", cli::logs(container));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{container}: /readyz not 200 within {within:?}:\n{}",
        cli::logs(container)
    );
}

/// Polls the container's health status until `healthy`; returns how long that took.
async fn wait_healthy(container: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = inspect(container, "{{.State.Health.Status}}");
        if status == "healthy" {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{container}: HEALTHCHECK still `{status}` after {within:?}: {}\n{}",
            inspect(container, "{{json .State.Health}}"),
            cli::logs(container)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn server_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

pub async fn check(built: &Built, cleanup: &mut Cleanup) {
    no_volume_declared(built);
    let dir = cleanup.dir();
    let first = Upstream::named("first").await;
    let second = Upstream::named("second").await;
    let ports = Ports::free();
    let file = dir.join("proxy.yaml");
    write_config(&file, &config(&ports, &first.host_port()));

    let main = start(built, cleanup, "main", &file, &[]);
    let ready = wait_ready(&main, ports.admin, Duration::from_secs(60)).await;
    say(&format!("/readyz 200 {ready:.1?} after docker run"));
    traffic(&ports, "first").await;
    probes_and_user(&main, &ports).await;
    let healthy = wait_healthy(&main, Duration::from_secs(60)).await;
    say(&format!("HEALTHCHECK healthy {healthy:.1?} after ready"));
    no_anonymous_volume(&main);

    write_config(&file, &config(&ports, &second.host_port()));
    reload(&ports, "second").await;
    drain(&main, &ports, &second).await;
    let log = cli::logs(&main);
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "an ERROR was logged (the readiness check of the TLS port must say nothing):\n{log}"
    );

    hardened(built, cleanup, &dir, &first).await;
    low_port_in_words(built, cleanup, &dir, &first);
}

/// The image declares no VOLUME: a plain `docker run` leaves no anonymous volume behind.
fn no_volume_declared(built: &Built) {
    let volumes = inspect(&built.rproxy, "{{json .Config.Volumes}}");
    assert!(
        volumes == "null" || volumes == "{}",
        "the image declares volumes: {volumes}"
    );
    assert_eq!(inspect(&built.rproxy, "{{.Config.User}}"), "10001:10001");
}

fn no_anonymous_volume(container: &str) {
    let mounts = inspect(container, "{{range .Mounts}}{{.Type}} {{end}}");
    assert_eq!(mounts.trim(), "bind", "mounts of {container}: {mounts}");
}

/// HTTP/1.1 and HTTPS over h2 through the container to the upstream on the host.
async fn traffic(ports: &Ports, upstream: &str) {
    let plain = get(
        &crate::common::client(),
        &format!("http://127.0.0.1:{}/x", ports.http),
    )
    .await;
    assert_eq!(plain.status(), 200);
    assert_eq!(server_of(&plain), upstream);
    let tls = get(
        &https_client(),
        &format!("https://127.0.0.1:{}/x", ports.https),
    )
    .await;
    assert_eq!(tls.status(), 200);
    assert_eq!(tls.version(), reqwest::Version::HTTP_2, "ALPN h2");
    assert_eq!(server_of(&tls), upstream);
    say("proxied HTTP/1.1 and HTTPS over h2 to the upstream on the host");
}

/// `/healthz`, `rproxy healthcheck` both ways, and the user the process runs as.
async fn probes_and_user(container: &str, ports: &Ports) {
    let healthz = get(
        &crate::common::client(),
        &format!("http://127.0.0.1:{}/healthz", ports.admin),
    )
    .await;
    assert_eq!(healthz.status(), 200);
    let long = Duration::from_secs(30);
    let ok = docker(&["exec", container, "rproxy", "healthcheck"], long);
    assert!(
        ok.stdout.contains("200"),
        "rproxy healthcheck: {:?} {} {}",
        ok.code,
        ok.stdout,
        ok.stderr
    );
    assert!(ok.ok());
    let dead = format!("127.0.0.1:{}", free_port());
    let bad = docker(
        &["exec", container, "rproxy", "healthcheck", "--admin", &dead],
        long,
    );
    assert_eq!(
        bad.code,
        Some(1),
        "healthcheck of a closed port: {}",
        bad.stderr
    );
    assert!(bad.stderr.contains("unhealthy"), "{}", bad.stderr);

    let status = docker(&["exec", container, "cat", "/proc/1/status"], long).expect("status");
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "10001", "10001", "10001", "10001"],
        "rproxy's uids"
    );
    say("/healthz 200, `rproxy healthcheck` 0 (and 1 for a closed port), pid 1 runs as uid 10001");
}

/// The mounted file, changed in place, is picked up without a restart.
async fn reload(ports: &Ports, upstream: &str) {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{}/x", ports.http);
    let client = crate::common::client();
    loop {
        let resp = get(&client, &url).await;
        if resp.status() == 200 && server_of(&resp) == upstream {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the changed file was not reloaded within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(&format!(
        "a change of the mounted file reloaded in {:.1?}",
        started.elapsed()
    ));
}

/// `docker stop` lets a request in flight finish, and the container exits 0.
async fn drain(container: &str, ports: &Ports, upstream: &Upstream) {
    let url = format!("http://127.0.0.1:{}/slow", ports.http);
    let in_flight = tokio::spawn(async move {
        let resp = crate::common::client()
            .get(&url)
            .header("x-delay-ms", "2000")
            .send()
            .await;
        match resp {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    });
    let waited = crate::common::wait_until(Duration::from_secs(10), || async {
        upstream.state.in_flight() == 1
    })
    .await;
    assert!(waited, "the slow request never reached the upstream");
    let stop = docker(&["stop", "-t", "20", container], Duration::from_secs(60));
    let took = stop.took;
    stop.expect("docker stop");
    let (status, body) = in_flight.await.expect("request task");
    assert_eq!(status, 200, "the request in flight: {body}");
    assert_eq!(body, "second");
    let code = inspect(container, "{{.State.ExitCode}}");
    assert_eq!(
        code,
        "0",
        "exit code after docker stop:\n{}",
        cli::logs(container)
    );
    say(&format!(
        "docker stop finished the request in flight (2 s upstream delay) and exited 0 in {took:.1?}"
    ));
}

/// `--read-only --cap-drop ALL --cap-add NET_BIND_SERVICE --security-opt no-new-privileges`:
/// starts, serves, stops; and `--cap-drop ALL` alone still runs the binary.
async fn hardened(built: &Built, cleanup: &mut Cleanup, dir: &Path, upstream: &Upstream) {
    let ports = Ports::free();
    let file = dir.join("hardened.yaml");
    write_config(&file, &config(&ports, &upstream.host_port()));
    let flags = [
        "--read-only",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
    ];
    let name = start(built, cleanup, "hardened", &file, &flags);
    wait_ready(&name, ports.admin, Duration::from_secs(60)).await;
    let resp = get(
        &crate::common::client(),
        &format!("http://127.0.0.1:{}/", ports.http),
    )
    .await;
    assert_eq!(resp.status(), 200);
    docker(&["stop", "-t", "20", &name], Duration::from_secs(60)).expect("docker stop");
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");

    let bare = format!("rproxy-test-{}-nocaps", std::process::id());
    cleanup.container(&bare);
    let version = docker(
        &[
            "run",
            "--name",
            &bare,
            "--cap-drop",
            "ALL",
            &built.rproxy,
            "--version",
        ],
        Duration::from_secs(60),
    )
    .expect("rproxy --version with --cap-drop ALL");
    assert!(version.contains("rproxy"), "{version}");
    say("--read-only --cap-drop ALL (+NET_BIND_SERVICE) serves and stops with 0; --cap-drop ALL alone execs");
}

/// A port below 1024 that may not be bound is reported at start, in words, with exit 1.
fn low_port_in_words(built: &Built, cleanup: &mut Cleanup, dir: &Path, upstream: &Upstream) {
    let start_at = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if start_at <= 1 {
        say("(not checked: this host lets anyone bind port 1)");
        return;
    }
    let ports = Ports::free();
    let file = dir.join("lowport.yaml");
    let text = config(&ports, &upstream.host_port())
        .replace(&format!("127.0.0.1:{}", ports.http), "127.0.0.1:1");
    write_config(&file, &text);
    let name = format!("rproxy-test-{}-lowport", std::process::id());
    cleanup.container(&name);
    let mount = format!("{}:/etc/rproxy/proxy.yaml:ro", file.display());
    let out = docker(
        &[
            "run",
            "--name",
            &name,
            "--network",
            "host",
            "--cap-drop",
            "ALL",
            "-v",
            &mount,
            &built.rproxy,
        ],
        Duration::from_secs(60),
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{said}");
    assert!(
        said.contains("listen.http") && said.contains("ip_unprivileged_port_start"),
        "{said}"
    );
    say("port 1 without the capability: exit 1, `listen.http: cannot listen on 127.0.0.1:1: Permission denied (...)`");
}
