//! HTTP/2 abuse on the plain listener (h2c, prior knowledge): rapid reset, oversized header
//! lists and CONTINUATION floods, more concurrent streams than advertised. After each the
//! process is alive, its RSS stays bounded and a normal client is served at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, Proxy, Upstream};
use h2::Reason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// RSS above this after an attack is a failure (the proxy idles at a few tens of MiB).
const RSS_LIMIT_KIB: u64 = 200 * 1024;

fn pool(up: &Upstream) -> String {
    format!(
        "upstreams:\n  app:\n    servers: [{}]\n    read_timeout: 10s\nroutes:\n  - {{ path: /, upstream: app }}\n",
        up.host_port()
    )
}

/// The resident set size of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// One GET over a fresh h2c connection (prior knowledge); returns the status.
async fn h2_get(proxy: &Proxy, path: &str) -> Result<u16, String> {
    let work = async {
        let tcp = TcpStream::connect(proxy.http_addr())
            .await
            .map_err(|e| e.to_string())?;
        let (client, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get(format!("http://127.0.0.1:{}{path}", proxy.http))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
        let resp = resp.await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "h2 GET timed out".to_string())?
}

/// After an attack: alive, bounded RSS, and normal HTTP/1 and h2 clients get 200 within 2 s.
async fn assert_still_serving(proxy: &mut Proxy, attack: &str) {
    assert!(
        proxy.try_exit().is_none(),
        "rproxy died after {attack}\n{}",
        proxy.stderr()
    );
    let rss = rss_kib(proxy.pid());
    println!("{attack}: rproxy RSS {} MiB", rss / 1024);
    assert!(
        rss < RSS_LIMIT_KIB,
        "RSS {rss} KiB after {attack} (limit {RSS_LIMIT_KIB} KiB)"
    );
    let started = Instant::now();
    let resp = client()
        .get(proxy.url("/after"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTP/1 GET after {attack}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "HTTP/1 GET after {attack}");
    assert_eq!(
        h2_get(proxy, "/after-h2").await,
        Ok(200),
        "h2 GET after {attack}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "normal requests took {:?} after {attack}",
        started.elapsed()
    );
}

/// Opens streams on one h2c connection and resets each at once, up to `max`; returns how many
/// were reset and why the connection stopped taking more (a GOAWAY is the expected defence).
async fn reset_burst(proxy: &Proxy, max: usize) -> (usize, Option<String>) {
    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    let mut stopped = None;
    while sent < max {
        let ready = futures_util::future::poll_fn(|cx| h2.poll_ready(cx));
        match tokio::time::timeout(Duration::from_secs(5), ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stopped = Some(e.to_string());
                break;
            }
            Err(_) => panic!("no stream capacity for 5 s after {sent} resets"),
        };
        let req = http::Request::get(format!("http://127.0.0.1:{}/reset/{sent}", proxy.http))
            .body(())
            .unwrap();
        match h2.send_request(req, false) {
            Ok((_resp, mut stream)) => stream.send_reset(Reason::CANCEL),
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        }
        sent += 1;
    }
    drop(h2);
    // Let the connection flush what it has, or fail.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    (sent, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_does_not_hurt() {
    let up = Upstream::named("app").await;
    let mut proxy = Proxy::start(&pool(&up)).await;
    assert_eq!(h2_get(&proxy, "/before").await, Ok(200));

    // 10,000 open-and-reset streams, on as many connections as the server makes us use.
    let started = Instant::now();
    let (mut total, mut connections, mut goaways) = (0, 0, 0);
    let mut first_stop = None;
    while total < 10_000 && started.elapsed() < Duration::from_secs(10) {
        let (sent, stopped) = reset_burst(&proxy, 10_000 - total).await;
        total += sent;
        connections += 1;
        if let Some(why) = stopped {
            goaways += 1;
            first_stop.get_or_insert(why);
        }
    }
    println!(
        "rapid reset: {total} streams opened and reset in {:?} over {connections} connections, \
         {goaways} cut off by the server (first: {first_stop:?}); upstream got {} requests",
        started.elapsed(),
        up.requests()
    );
    assert_eq!(
        total, 10_000,
        "the attack could not even be sent within 10 s"
    );

    // The same on the wire, without a client library in between: HEADERS + RST_STREAM pairs.
    let started = Instant::now();
    let (mut pairs, mut connections) = (0, 0);
    while pairs < 10_000 && started.elapsed() < Duration::from_secs(10) {
        pairs += raw_reset_burst(&proxy, 10_000 - pairs).await;
        connections += 1;
    }
    println!(
        "rapid reset (raw frames): {pairs} HEADERS+RST_STREAM pairs in {:?} over {connections} \
         connections; upstream got {} requests in all",
        started.elapsed(),
        up.requests()
    );
    assert_eq!(
        pairs, 10_000,
        "the raw attack could not be sent within 10 s"
    );

    // Nothing keeps working on the abandoned streams.
    let drained = common::wait_until(Duration::from_secs(5), || async {
        up.state.in_flight() == 0
    })
    .await;
    assert!(
        drained,
        "{} upstream requests still in flight 5 s after the resets",
        up.state.in_flight()
    );
    assert_still_serving(&mut proxy, "rapid reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_list_is_refused() {
    let up = Upstream::echo("app").await;
    let mut proxy = Proxy::start(&pool(&up)).await;

    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    // 70 KiB in one header: over the 64 KiB decoded header list limit.
    let req = http::Request::get(format!("http://127.0.0.1:{}/big", proxy.http))
        .header("x-fill", "f".repeat(70 * 1024))
        .body(())
        .unwrap();
    let outcome = match h2.send_request(req, true) {
        Ok((resp, _)) => tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("an answer to the oversized request within 5 s")
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    println!("oversized header list: {outcome:?}");
    match outcome {
        Ok(431) | Err(_) => {}
        Ok(other) => panic!("a 70 KiB header list got {other}"),
    }
    assert!(
        up.state.seen().iter().all(|s| s.uri != "/big"),
        "the oversized request reached the upstream"
    );
    assert_still_serving(&mut proxy, "oversized header list").await;
}

// ---- raw HTTP/2 framing, for what a well-behaved client library will not send ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 7;
const CANCEL: u32 = 8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix whose high bits are `mask`.
fn hpack_int(out: &mut Vec<u8>, mask: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(mask | v as u8);
        return;
    }
    out.push(mask | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A GET request header block (static-table names, literals without indexing).
fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    hpack_int(&mut b, 0, 4, 4); // :path, literal value
    hpack_str(&mut b, path.as_bytes());
    hpack_int(&mut b, 0, 4, 1); // :authority, literal value
    hpack_str(&mut b, authority.as_bytes());
    b
}

/// A literal header field with a new name, without indexing.
fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00];
    hpack_str(&mut b, name.as_bytes());
    hpack_str(&mut b, value);
    b
}

/// A frame the server sent.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(rd: &mut OwnedReadHalf) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    rd.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Connects, exchanges SETTINGS (ours empty, theirs acknowledged) and returns both halves, so
/// the server's advertised limits apply to what is sent next.
async fn raw_h2(proxy: &Proxy) -> (OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf, Frame) {
    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    wr.write_all(&hello).await.unwrap();
    let settings = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let f = read_frame(&mut rd).await.expect("server SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                return f;
            }
        }
    })
    .await
    .expect("server SETTINGS within 5 s");
    wr.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    (rd, wr, settings)
}

/// `last stream N, error E` from a GOAWAY payload.
fn goaway_text(payload: &[u8]) -> String {
    let word = |i: usize| {
        payload
            .get(i..i + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    format!("last stream {}, error {}", word(0) & 0x7fff_ffff, word(4))
}

/// The value of `id` in a SETTINGS payload.
fn setting(f: &Frame, id: u16) -> Option<u32> {
    f.payload.chunks_exact(6).find_map(|c| {
        (u16::from_be_bytes([c[0], c[1]]) == id)
            .then(|| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
    })
}

/// Writes up to `max` HEADERS + RST_STREAM(CANCEL) pairs on one raw h2c connection, 100 at a
/// time, until the server sends GOAWAY or closes; returns how many pairs were written.
async fn raw_reset_burst(proxy: &Proxy, max: usize) -> usize {
    let authority = format!("127.0.0.1:{}", proxy.http);
    let (mut rd, mut wr, _) = raw_h2(proxy).await;
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut rd).await {
                Ok(f) if f.kind == GOAWAY => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let mut written = 0;
    while written < max && !reader.is_finished() {
        let mut batch = Vec::new();
        for _ in 0..100.min(max - written) {
            let id = 1 + 2 * written as u32;
            let block = request_block(&authority, &format!("/raw-reset/{written}"));
            batch.extend(frame(HEADERS, END_HEADERS, id, &block));
            batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            written += 1;
        }
        if wr.write_all(&batch).await.is_err() {
            break;
        }
    }
    reader.abort();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let up = Upstream::echo("app").await;
    let mut proxy = Proxy::start(&pool(&up)).await;
    let authority = format!("127.0.0.1:{}", proxy.http);

    let (mut rd, mut wr, _) = raw_h2(&proxy).await;
    // What the server says while we flood: GOAWAY, a reset, or the end of the connection.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut rd)).await {
                Ok(Ok(f)) => {
                    let end = f.kind == GOAWAY;
                    seen.push(format!("type {} stream {}", f.kind, f.stream));
                    if end {
                        return (seen, true);
                    }
                }
                Ok(Err(_)) => {
                    seen.push("connection closed".into());
                    return (seen, true);
                }
                Err(_) => return (seen, false),
            }
        }
    });

    // HEADERS without END_HEADERS, then CONTINUATION frames that never end: up to 8 MiB.
    let block = request_block(&authority, "/flood");
    wr.write_all(&frame(HEADERS, END_STREAM, 1, &block))
        .await
        .unwrap();
    let mut fill = Vec::new();
    let mut i = 0;
    while fill.len() < 16_000 {
        fill.extend(literal(&format!("x-flood-{i}"), &[b'v'; 100]));
        i += 1;
    }
    let continuation = frame(CONTINUATION, 0, 1, &fill);
    let mut written = 0usize;
    let started = Instant::now();
    while written < 8 << 20 && !reader.is_finished() {
        if wr.write_all(&continuation).await.is_err() {
            break;
        }
        written += continuation.len();
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (seen, ended) = reader.await.unwrap();
    println!(
        "CONTINUATION flood: wrote {} KiB before stopping; server: {seen:?}",
        written / 1024
    );
    assert!(
        ended,
        "the server neither sent GOAWAY nor closed during a CONTINUATION flood of {} KiB: {seen:?}",
        written / 1024
    );
    assert!(
        written < 8 << 20,
        "the server read 8 MiB of a single header block"
    );
    assert_eq!(up.requests(), 0, "a flooded request reached the upstream");
    assert_still_serving(&mut proxy, "CONTINUATION flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_max_concurrent_are_refused() {
    let up = Upstream::named("app").await;
    let mut proxy = Proxy::start(&pool(&up)).await;
    let authority = format!("127.0.0.1:{}", proxy.http);

    let (mut rd, mut wr, settings) = raw_h2(&proxy).await;
    let max = setting(&settings, 0x3).expect("server advertises SETTINGS_MAX_CONCURRENT_STREAMS");
    assert!(
        (1..=1000).contains(&max),
        "max_concurrent_streams {max} is unbounded"
    );
    let opened = max as usize + 50;

    // Watch the upstream's peak concurrency while the streams are open.
    let peak = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (peak, state) = (peak.clone(), up.state.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(state.in_flight(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut burst = Vec::new();
    for i in 0..opened as u32 {
        let mut block = request_block(&authority, &format!("/stream/{i}"));
        block.extend(literal("x-delay-ms", b"2000"));
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
    }
    wr.write_all(&burst).await.unwrap();

    let mut refused = std::collections::BTreeSet::new();
    let mut answered = std::collections::BTreeSet::new();
    let mut goaway = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while refused.len() + answered.len() < opened {
        match tokio::time::timeout_at(deadline, read_frame(&mut rd)).await {
            Ok(Ok(f)) => match f.kind {
                RST_STREAM => {
                    let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                    assert_eq!(
                        code, REFUSED_STREAM,
                        "stream {} reset with {code}",
                        f.stream
                    );
                    refused.insert(f.stream);
                }
                HEADERS | DATA if f.flags & END_STREAM != 0 => {
                    answered.insert(f.stream);
                }
                GOAWAY => {
                    goaway = Some(f.payload.clone());
                    break;
                }
                _ => {}
            },
            Ok(Err(_)) | Err(_) => break,
        }
    }
    watch.abort();
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "{opened} streams over max_concurrent_streams {max}: {} answered, {} refused, goaway {:?}, upstream peak {peak}",
        answered.len(),
        refused.len(),
        goaway.as_deref().map(goaway_text)
    );
    assert!(
        peak <= max as usize,
        "{peak} requests in flight upstream from one connection, over the advertised {max}"
    );
    assert!(
        refused.len() >= opened - max as usize || goaway.is_some(),
        "streams over the limit were neither refused nor answered with GOAWAY \
         ({} refused, {} answered)",
        refused.len(),
        answered.len()
    );
    assert!(
        refused.intersection(&answered).next().is_none(),
        "a stream was both refused and answered"
    );
    assert_still_serving(&mut proxy, "too many concurrent streams").await;
}
