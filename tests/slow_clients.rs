//! Slow and idle clients: `server.header_timeout` closes connections that dribble or withhold
//! their request heads (the first request and later ones on a keep-alive connection), hundreds
//! of such connections do not starve a normal client, and `server.max_connections` closes
//! connections over the limit at once while the others keep working.

mod common;

use std::time::{Duration, Instant};

use common::{raw_status, read_response, Proxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

fn pool(up: &Upstream) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\nroutes:\n  - {{ path: /, upstream: app }}\n",
        up.host_port()
    )
}

/// Reads until EOF or an error (the connection is gone); returns what arrived.
fn until_closed(mut rd: OwnedReadHalf) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = rd.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Writes `drip` one byte per 100 ms on `stream` (after `start`) until the proxy closes the
/// connection or `give_up` passes; returns how long after the first dripped byte it closed
/// and what the client received.
async fn dribble(
    stream: TcpStream,
    start: &[u8],
    drip: &[u8],
    give_up: Duration,
) -> (Option<Duration>, String) {
    let (rd, mut wr) = stream.into_split();
    let reader = until_closed(rd);
    let _ = wr.write_all(start).await;
    let started = Instant::now();
    let mut i = 0;
    let closed = loop {
        if reader.is_finished() {
            break Some(started.elapsed());
        }
        if started.elapsed() > give_up {
            break None;
        }
        // Writes fail once the proxy has closed; the reader then finishes.
        let _ = wr.write_all(&drip[i % drip.len()..=i % drip.len()]).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    reader.abort();
    let got = match closed {
        Some(_) => reader.await.unwrap_or_default(),
        None => String::new(),
    };
    (closed, got)
}

/// A keep-alive connection that has had one complete request answered.
async fn after_one_request(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.http_addr()).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&first), 200, "{first}");
    s
}

const DRIP: &[u8] = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Gives up on a slow connection after this; `header_timeout` is 1 s in these tests.
const GIVE_UP: Duration = Duration::from_secs(6);

async fn timed_proxy(up: &Upstream) -> Proxy {
    Proxy::builder()
        .server("header_timeout: 1s")
        .yaml(&pool(up))
        .start()
        .await
}

/// Asserts the connection was closed about `header_timeout` (1 s) after the slow part began,
/// with nothing or a 408 sent.
fn assert_cut_off(case: &str, (closed, got): (Option<Duration>, String)) {
    let t = closed.unwrap_or_else(|| panic!("{case}: still open after {GIVE_UP:?}"));
    println!("{case}: closed after {t:?}");
    assert!(
        t >= Duration::from_millis(700),
        "{case}: closed after {t:?}, before the 1 s header_timeout"
    );
    assert!(
        t <= Duration::from_millis(1800),
        "{case}: closed after {t:?}, want about header_timeout (1 s)"
    );
    assert!(
        got.is_empty() || raw_status(&got) == 408,
        "{case}: got {got:?}, want nothing or 408"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_a_silent_connection() {
    let up = Upstream::named("app").await;
    let proxy = timed_proxy(&up).await;
    let s = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let (rd, _wr) = s.into_split();
    let started = Instant::now();
    let (closed, got) = match tokio::time::timeout(GIVE_UP, until_closed(rd)).await {
        Ok(got) => (Some(started.elapsed()), got.unwrap_or_default()),
        Err(_) => (None, String::new()),
    };
    assert_cut_off("a connection that sends nothing", (closed, got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_a_dribbled_request_line() {
    let up = Upstream::named("app").await;
    let proxy = timed_proxy(&up).await;
    let s = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let line = b"GET /dribbled-request-line-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_cut_off(
        "a dribbled request line",
        dribble(s, b"", line, GIVE_UP).await,
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_dribbled_headers() {
    let up = Upstream::named("app").await;
    let proxy = timed_proxy(&up).await;
    let s = TcpStream::connect(proxy.http_addr()).await.unwrap();
    assert_cut_off(
        "dribbled headers of the first request",
        dribble(s, b"GET / HTTP/1.1\r\nHost: x\r\n", DRIP, GIVE_UP).await,
    );
    assert_eq!(up.requests(), 0);
}

/// On a reused connection the next request's head gets `header_timeout` from its first byte
/// (nginx's `client_header_timeout`), however long `keepalive_timeout` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_dribbled_headers_of_a_later_request() {
    let up = Upstream::named("app").await;
    // rproxy's own HTTP/1.1 engine reads every head with its own deadline; pingora's path
    // gives a later head keepalive_timeout + header_timeout (BENCHMARKS.md, "Which engine").
    let proxy = Proxy::builder()
        .server("header_timeout: 1s")
        .server("keepalive_timeout: 5s")
        .server("fast_path: true")
        .yaml(&pool(&up))
        .start()
        .await;
    let s = after_one_request(&proxy).await;
    assert_cut_off(
        "dribbled headers of a second request",
        dribble(s, b"GET /second HTTP/1.1\r\nHost: x\r\n", DRIP, GIVE_UP).await,
    );
    assert_eq!(up.requests(), 1, "only the first request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_starve_a_normal_one() {
    const SLOW: usize = 500;
    // Long enough that opening 500 connections on a loaded CI machine (seen: several seconds
    // in a debug build) stays well inside it; each connection is judged by its own age below.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    let up = Upstream::named("app").await;
    let proxy = Proxy::builder()
        .server(&format!("header_timeout: {}s", HEADER_TIMEOUT.as_secs()))
        .yaml(&pool(&up))
        .start()
        .await;

    // 500 connections, each with an unfinished request head, and when each was opened.
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let opened = Instant::now();
        let mut s = TcpStream::connect(proxy.http_addr())
            .await
            .unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push((opened, s));
    }

    // A normal client is served at once while they are all open.
    let started = Instant::now();
    let resp = common::fresh_client()
        .get(proxy.url("/normal"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("normal GET with {SLOW} slow clients open: {e}"));
    assert_eq!(resp.status().as_u16(), 200);
    println!(
        "normal GET with {SLOW} slow clients open: {:?}",
        started.elapsed()
    );

    // They really were open during that request: each still accepts bytes and has not been
    // answered or closed, unless its own header_timeout has (nearly) run out by now.
    let mut buf = [0u8; 64];
    let (mut open, mut judged) = (0, 0);
    for (opened, s) in &mut slow {
        let _ = s.write_all(b"a").await;
        let checked = Instant::now();
        // A read that times out: nothing arrived and the connection is not closed.
        let quiet = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf))
            .await
            .is_err();
        if checked.duration_since(*opened) < HEADER_TIMEOUT - Duration::from_secs(1) {
            judged += 1;
            open += usize::from(quiet);
        }
    }
    println!("{open}/{judged} slow connections young enough to judge were open");
    assert!(
        judged > 0,
        "the machine was too slow to judge any connection"
    );
    assert_eq!(
        open, judged,
        "slow connections closed before header_timeout"
    );

    // And the header timeout closes all of them.
    let closes = slow.into_iter().map(|(_, mut s)| async move {
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let all_closed = tokio::time::timeout(
        HEADER_TIMEOUT + Duration::from_secs(5),
        futures_util::future::join_all(closes),
    )
    .await;
    assert!(
        all_closed.is_ok(),
        "slow connections still open 5 s after header_timeout"
    );
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_excess_at_once() {
    const MAX: usize = 50;
    let up = Upstream::named("app").await;
    let proxy = Proxy::builder()
        .server(&format!("max_connections: {MAX}"))
        .yaml(&pool(&up))
        .start()
        .await;
    let addr = proxy.http_addr();

    // 50 keep-alive connections, each with a request answered (so the proxy counts them).
    let mut held = Vec::with_capacity(MAX);
    for i in 0..MAX {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /held/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = read_response(&mut s, Duration::from_secs(5)).await;
        assert_eq!(raw_status(&resp), 200, "held connection {i}: {resp}");
        held.push(s);
    }

    // The 51st is closed at once, unanswered.
    let started = Instant::now();
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /extra HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut got)).await;
    assert!(
        closed.is_ok(),
        "connection {} still open 2 s after connecting",
        MAX + 1
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let got = String::from_utf8_lossy(&got);
    assert!(
        raw_status(&got) != 200,
        "connection {} was served: {got}",
        MAX + 1
    );

    // The first 50 still work.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(format!("GET /again/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = read_response(s, Duration::from_secs(5)).await;
        assert_eq!(raw_status(&resp), 200, "held connection {i} again: {resp}");
    }
    assert!(
        up.state.seen().iter().all(|s| s.uri != "/extra"),
        "the request on the excess connection reached the upstream"
    );

    // Once they close, new connections are served again.
    drop(held);
    let served = common::wait_until(Duration::from_secs(5), || async {
        let resp = common::raw_request_timeout(
            addr,
            b"GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(1),
        )
        .await;
        raw_status(&resp) == 200
    })
    .await;
    assert!(
        served,
        "no new connection served after the held ones closed"
    );

    // And the limit is back in force with exactly 50 again.
    let mut again = Vec::with_capacity(MAX);
    for i in 0..MAX {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /held2/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = read_response(&mut s, Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&resp),
            200,
            "second round, connection {i}: {resp}"
        );
        again.push(s);
    }
}

/// pingora 0.9 alone keeps an idle HTTP/1.1 keep-alive connection open without limit
/// (`KeepaliveStatus::Infinite`); rproxy applies `server.keepalive_timeout` (default 75 s, as
/// nginx) to every reused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let up = Upstream::named("app").await;
    let proxy = Proxy::builder()
        .server("keepalive_timeout: 1s")
        .yaml(&pool(&up))
        .start()
        .await;
    let s = after_one_request(&proxy).await;
    let (rd, _wr) = s.into_split();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), until_closed(rd)).await;
    let took = started.elapsed();
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection is still open after {took:?}"
    );
    println!("idle keep-alive connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before keepalive_timeout"
    );
}
