//! Graceful shutdown: SIGTERM or SIGINT while a slow request is in flight lets that request
//! finish with 200, then the process exits 0 within `server.grace_period` plus a margin.

mod common;

use std::time::{Duration, Instant};

use common::whole::start_whole;
use common::{client, wait_until, Proxy, Upstream};

const GRACE: Duration = Duration::from_secs(4);
/// Time allowed beyond the grace period for the process to wind down.
const MARGIN: Duration = Duration::from_secs(6);
const SLOW: Duration = Duration::from_millis(1500);

async fn slow_proxy(up: &Upstream) -> Proxy {
    let servers = up.host_port();
    start_whole(
        |_| {},
        |p| {
            format!(
                "server:\n  threads: 2\n  grace_period: {}s\nlisten:\n  http: \"127.0.0.1:{}\"\n  admin: \"127.0.0.1:{}\"\n\
                 upstreams:\n  slow:\n    servers: [{servers}]\nroutes:\n  - path: /\n    upstream: slow\n",
                GRACE.as_secs(),
                p.http,
                p.admin
            )
        },
    )
    .await
}

/// Starts a slow request, sends `signal` once the upstream has it, and checks the request
/// completes and the process exits 0 in time.
async fn drains_on(signal: libc::c_int, name: &str) {
    let up = Upstream::builder("slow").delay(SLOW).start().await;
    let mut proxy = slow_proxy(&up).await;

    let url = proxy.url("/slow");
    let request = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            up.state.in_flight() == 1
        })
        .await,
        "the slow request never reached the upstream\n{}",
        proxy.stderr()
    );

    let signalled = Instant::now();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(proxy.pid() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({name})");

    let answer = tokio::time::timeout(SLOW + MARGIN, request)
        .await
        .unwrap_or_else(|_| panic!("in-flight request did not finish after {name}"))
        .expect("request task");
    match answer {
        Ok((status, body)) => {
            assert_eq!(
                status,
                200,
                "in-flight request after {name}: body {body}\n{}",
                proxy.stderr()
            );
            assert_eq!(body, "slow");
        }
        Err(e) => panic!(
            "in-flight request failed after {name}: {e}\n--- stderr ---\n{}",
            proxy.stderr()
        ),
    }

    let status = proxy.wait_exit(GRACE + MARGIN).await.unwrap_or_else(|| {
        panic!(
            "rproxy still running {:?} after {name}\n{}",
            GRACE + MARGIN,
            proxy.stderr()
        )
    });
    assert!(
        status.success(),
        "exit status after {name}: {status} (expected 0)\n--- stderr ---\n{}",
        proxy.stderr()
    );
    let took = signalled.elapsed();
    assert!(took <= GRACE + MARGIN, "exit took {took:?} after {name}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    drains_on(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test]
async fn sigint_drains_in_flight_requests_and_exits_0() {
    drains_on(libc::SIGINT, "SIGINT").await;
}

#[tokio::test]
async fn idle_proxy_exits_0_on_sigterm() {
    let up = Upstream::named("app").await;
    let mut proxy = slow_proxy(&up).await;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(proxy.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = proxy.wait_exit(GRACE + MARGIN).await.unwrap_or_else(|| {
        panic!(
            "idle rproxy still running after SIGTERM\n{}",
            proxy.stderr()
        )
    });
    assert!(status.success(), "exit status {status}\n{}", proxy.stderr());
}
