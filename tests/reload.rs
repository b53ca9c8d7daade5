//! Hot reload: rewrites under load lose no request, open WebSockets outlive reloads that replace
//! or remove their route and pool, editor rename-writes and Kubernetes ConfigMap symlink swaps
//! are picked up, a bad file keeps the old configuration, and a listen change waits for a restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::reload::write_atomic;
use common::whole::start_whole;
use common::ws::{self, echo_roundtrips};
use common::{client, count_servers, free_port, Proxy, RawUpstream, Upstream};

/// How long one reload may take to show in `/metrics` (poll 500 ms + settle 150 ms + compile).
const RELOAD_WAIT: Duration = Duration::from_secs(5);
const FAST_HEALTH: &str = "{ path: /health, interval: 200ms, timeout: 500ms, rise: 1, fall: 2 }";

/// `server:` and `listen:` for the given ports.
fn head(http: u16, admin: u16) -> String {
    format!(
        "server:\n  threads: 2\n  grace_period: 1s\nlisten:\n  http: \"127.0.0.1:{http}\"\n  admin: \"127.0.0.1:{admin}\"\n"
    )
}

/// Starts rproxy on `head + body`.
async fn start(body: &str) -> Proxy {
    let body = body.to_string();
    start_whole(|_| {}, move |p| head(p.http, p.admin) + &body).await
}

/// Rewrites the file to `head + body` and waits until a successful reload was counted.
async fn reload_to(proxy: &mut Proxy, body: &str) {
    let before = proxy.reloads("ok").await;
    let yaml = head(proxy.http, proxy.admin) + body;
    proxy.rewrite(&yaml);
    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "rewrite not applied within {RELOAD_WAIT:?}\n--- new file ---\n{yaml}\n--- stderr ---\n{}",
        proxy.stderr()
    );
}

/// Sends SIGHUP and waits until a successful reload was counted.
async fn sighup(proxy: &Proxy) {
    let before = proxy.reloads("ok").await;
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "SIGHUP reload not counted within {RELOAD_WAIT:?}\n{}",
        proxy.stderr()
    );
}

fn ws_url(proxy: &Proxy, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", proxy.http)
}

/// Pool `app` alternates [a, b] (even versions) and [b, c] (odd), health-checked; pool `ws`
/// alternates [e1] and [e2], so the WebSocket route's pool is replaced by another server.
fn load_body(version: usize, apps: &[&Upstream; 3], ws: &[&RawUpstream; 2]) -> String {
    let [a, b, c] = apps;
    let (app, wsp) = if version.is_multiple_of(2) {
        (format!("{}, {}", a.host_port(), b.host_port()), ws[0])
    } else {
        (format!("{}, {}", b.host_port(), c.host_port()), ws[1])
    };
    format!(
        "upstreams:\n  app:\n    servers: [{app}]\n    health: {FAST_HEALTH}\n  ws:\n    servers: [{}]\n\
         routes:\n  - {{ path: /ws, upstream: ws }}\n  - {{ path: /, upstream: app }}\n# version {version}\n",
        wsp.host_port()
    )
}

/// What the load loop saw.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    sent: AtomicUsize,
    failed: AtomicUsize,
    /// The first few failures, for the message.
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().expect("failures lock");
        if f.len() < 10 {
            f.push(why);
        }
    }
}

/// One client looping GETs (keep-alive) until told to stop.
async fn load_loop(url: String, load: Arc<Load>) {
    let client = client();
    while !load.stop.load(Ordering::SeqCst) {
        load.sent.fetch_add(1, Ordering::SeqCst);
        match client.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(_) if status == 200 => {}
                    Ok(body) => load.fail(format!("status {status}: {body}")),
                    Err(e) => load.fail(format!("status {status}, body error: {e}")),
                }
            }
            Err(e) => load.fail(format!("request error: {e:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    const CLIENTS: usize = 8;
    const REWRITES: usize = 20;
    const SIGHUPS: usize = 5;

    let (a, b, c) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    );
    let (e1, e2) = (ws::echo_upstream().await, ws::echo_upstream().await);
    let apps = [&a, &b, &c];
    let wss = [&e1, &e2];
    let mut proxy = start(&load_body(0, &apps, &wss)).await;
    let started = Instant::now();

    // A WebSocket opened before any reload, on e1.
    let mut socket = ws::connect(&ws_url(&proxy, "/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut socket, 2, "before")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    assert_eq!(e1.connections(), 1, "the first WebSocket goes to e1");

    let load = Arc::new(Load::default());
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(load_loop(proxy.url("/load"), load.clone())))
        .collect();
    assert!(
        common::wait_until(Duration::from_secs(5), || async {
            load.sent.load(Ordering::SeqCst) >= 50
        })
        .await,
        "the load loop does not get going"
    );

    for version in 1..=REWRITES {
        reload_to(&mut proxy, &load_body(version, &apps, &wss)).await;
        echo_roundtrips(&mut socket, 1, &format!("after rewrite {version}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the WebSocket opened before the reloads broke after rewrite {version}: {e}\n{}",
                    proxy.stderr()
                )
            });
        if version == 1 {
            // The replaced pool takes new WebSockets at once.
            let mut fresh = ws::connect(&ws_url(&proxy, "/ws"))
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
            echo_roundtrips(&mut fresh, 1, "fresh").await.unwrap();
            assert_eq!(e2.connections(), 1, "a WebSocket after the swap goes to e2");
            ws::close(fresh).await;
        }
    }
    for n in 1..=SIGHUPS {
        sighup(&proxy).await;
        echo_roundtrips(&mut socket, 1, &format!("after SIGHUP {n}"))
            .await
            .unwrap_or_else(|e| panic!("WebSocket broke after SIGHUP {n}: {e}"));
    }

    load.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .expect("load task ends")
            .expect("load task");
    }
    let sent = load.sent.load(Ordering::SeqCst);
    let failed = load.failed.load(Ordering::SeqCst);
    println!(
        "reload under load: {sent} requests, {failed} failed ({REWRITES} rewrites + {SIGHUPS} SIGHUPs \
         with {CLIENTS} clients in {:.1?}; a={} b={} c={})",
        started.elapsed(),
        a.requests(),
        b.requests(),
        c.requests()
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {sent} requests failed during reloads; first: {:#?}\n--- stderr ---\n{}",
        load.failures.lock().unwrap(),
        proxy.stderr()
    );
    assert!(sent >= 100, "only {sent} requests were sent");
    // Both memberships really served: c is only in the odd versions, a only in the even ones.
    assert!(
        a.requests() > 0 && b.requests() > 0 && c.requests() > 0,
        "a={} b={} c={}",
        a.requests(),
        b.requests(),
        c.requests()
    );
    // The last version is [a, b]: c gets nothing more.
    let c_before = c.requests();
    let counts = count_servers(&client(), &proxy.url("/after"), 20).await;
    assert_eq!(c.requests(), c_before, "c left the pool: {counts:?}");
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );
    echo_roundtrips(&mut socket, 3, "at the end")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    ws::close(socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_outlives_removal_of_its_route_and_pool() {
    let app = Upstream::named("app").await;
    let (e1, e2) = (ws::echo_upstream().await, ws::echo_upstream().await);
    let mut proxy = start(&format!(
        "upstreams:\n  old:\n    servers: [{}]\n  app:\n    servers: [{}]\n\
         routes:\n  - {{ path: /ws, upstream: old }}\n  - {{ path: /, upstream: app }}\n",
        e1.host_port(),
        app.host_port()
    ))
    .await;
    let mut socket = ws::connect(&ws_url(&proxy, "/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut socket, 2, "before").await.unwrap();

    // Route /ws and pool `old` are gone; a new pool `new` with another server serves /chat.
    reload_to(
        &mut proxy,
        &format!(
            "upstreams:\n  new:\n    servers: [{}]\n  app:\n    servers: [{}]\n\
             routes:\n  - {{ path: /chat, upstream: new }}\n  - {{ path: /, upstream: app }}\n",
            e2.host_port(),
            app.host_port()
        ),
    )
    .await;
    echo_roundtrips(&mut socket, 4, "after removal")
        .await
        .unwrap_or_else(|e| panic!("open WebSocket broke when its route was removed: {e}"));

    // New requests see the new configuration.
    let resp = proxy.get("/ws").await;
    assert_eq!(resp.headers()["x-server"], "app", "/ws now falls to `/`");
    let mut chat = ws::connect(&ws_url(&proxy, "/chat"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    echo_roundtrips(&mut chat, 2, "chat").await.unwrap();
    assert_eq!(e2.connections(), 1, "/chat goes to the new pool's server");
    assert_eq!(
        e1.connections(),
        1,
        "nothing new reached the removed pool's server"
    );

    sighup(&proxy).await;
    echo_roundtrips(&mut socket, 2, "after SIGHUP")
        .await
        .unwrap();
    echo_roundtrips(&mut chat, 2, "chat after SIGHUP")
        .await
        .unwrap();
    ws::close(socket).await;
    ws::close(chat).await;
}

/// `upstreams:` with pool `app` on `up` and routes `/` plus, when `extra` is given, `extra` ->
/// pool `b` on `b`.
fn two_routes(up: &Upstream, b: &Upstream, extra: Option<&str>) -> String {
    let mut s = format!(
        "upstreams:\n  app:\n    servers: [{}]\n  b:\n    servers: [{}]\nroutes:\n",
        up.host_port(),
        b.host_port()
    );
    if let Some(path) = extra {
        s.push_str(&format!("  - {{ path: {path}, upstream: b }}\n"));
    }
    s.push_str("  - { path: /, upstream: app }\n");
    s
}

/// The `X-Server` of `GET path` (empty when absent), panicking on a non-200 answer.
async fn served_by(proxy: &Proxy, path: &str) -> String {
    let resp = proxy.get(path).await;
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.headers()
        .get("x-server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_configmap_symlink_swap_is_picked_up() {
    let app = Upstream::named("app").await;
    let b = Upstream::named("b").await;
    let first = two_routes(&app, &b, None);
    // The kubelet's layout: proxy.yaml -> ..data/proxy.yaml, ..data -> ..2026_01.
    let proxy = start_whole(
        |dir| {
            std::fs::create_dir(dir.join("..2026_01")).unwrap();
            std::os::unix::fs::symlink("..2026_01", dir.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/proxy.yaml", dir.join("proxy.yaml")).unwrap();
        },
        |p| head(p.http, p.admin) + &first,
    )
    .await;
    let dir = proxy.dir().to_path_buf();
    assert!(
        std::fs::symlink_metadata(dir.join("proxy.yaml"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the config is read through the symlink"
    );
    assert_eq!(served_by(&proxy, "/new").await, "app");

    let before = proxy.reloads("ok").await;
    // An update: a new timestamped dir, then an atomic swap of `..data`, then the old dir goes.
    let second = head(proxy.http, proxy.admin) + &two_routes(&app, &b, Some("/new"));
    std::fs::create_dir(dir.join("..2026_02")).unwrap();
    std::fs::write(dir.join("..2026_02/proxy.yaml"), &second).unwrap();
    std::os::unix::fs::symlink("..2026_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_01")).unwrap();

    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "the ..data swap was not picked up\n{}",
        proxy.stderr()
    );
    assert_eq!(
        served_by(&proxy, "/new").await,
        "b",
        "the new route answers"
    );
    assert_eq!(served_by(&proxy, "/other").await, "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_rename_write_is_picked_up() {
    let app = Upstream::named("app").await;
    let b = Upstream::named("b").await;
    let proxy = start(&two_routes(&app, &b, None)).await;
    assert_eq!(served_by(&proxy, "/new").await, "app");

    let before = proxy.reloads("ok").await;
    let yaml = head(proxy.http, proxy.admin) + &two_routes(&app, &b, Some("/new"));
    // What vim/VS Code do: write a sibling, rename it over the original (a new inode).
    write_atomic(&proxy.config, &yaml);
    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "the rename-write was not picked up\n{}",
        proxy.stderr()
    );
    assert_eq!(
        served_by(&proxy, "/new").await,
        "b",
        "the new route answers"
    );

    // A second rename-write (the watcher still follows the path, not the old inode).
    let before = proxy.reloads("ok").await;
    let yaml = head(proxy.http, proxy.admin) + &two_routes(&app, &b, Some("/newer"));
    write_atomic(&proxy.config, &yaml);
    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "the second rename-write was not picked up\n{}",
        proxy.stderr()
    );
    assert_eq!(served_by(&proxy, "/newer").await, "b");
    assert_eq!(served_by(&proxy, "/new").await, "app", "/new is gone again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_file_keeps_old_config_and_fix_applies() {
    let app = Upstream::named("app").await;
    let b = Upstream::named("b").await;
    let mut proxy = start(&two_routes(&app, &b, Some("/old"))).await;
    assert_eq!(served_by(&proxy, "/old").await, "b");
    assert_eq!(proxy.reloads("error").await, 0.0);
    let head = head(proxy.http, proxy.admin);
    let good = two_routes(&app, &b, Some("/new"));

    // Three kinds of bad file: an unknown key, broken YAML, a route to a missing pool.
    let typo = good.replace("{ path: /new, upstream: b }", "{ path: /new, upstreem: b }");
    let broken = good.replace(
        "  - { path: /, upstream: app }",
        "  - { path: /, upstream: [app",
    );
    let missing = good.replace(
        "{ path: /new, upstream: b }",
        "{ path: /new, upstream: nope }",
    );
    for (i, bad) in [typo, broken, missing].iter().enumerate() {
        let (ok_before, err_before) = (proxy.reloads("ok").await, proxy.reloads("error").await);
        let yaml = format!("{head}{bad}");
        proxy.rewrite(&yaml);
        assert!(
            proxy
                .wait_reloads_above("error", err_before, RELOAD_WAIT)
                .await,
            "bad file {i} not counted as a reload error\n{yaml}\n{}",
            proxy.stderr()
        );
        assert_eq!(
            proxy.reloads("error").await,
            err_before + 1.0,
            "bad file {i}"
        );
        assert_eq!(proxy.reloads("ok").await, ok_before, "bad file {i}");
        // The old configuration keeps serving, all of it.
        assert_eq!(served_by(&proxy, "/old").await, "b", "bad file {i}");
        assert_eq!(served_by(&proxy, "/new").await, "app", "bad file {i}");
    }
    // The unknown key is reported with the file and its line.
    let typo_line = format!("{head}{good}")
        .lines()
        .position(|l| l.contains("path: /new"))
        .unwrap()
        + 1;
    let stderr = proxy.stderr();
    assert!(
        stderr.contains(&format!("proxy.yaml:{typo_line}:")),
        "the error names proxy.yaml:{typo_line}\n{stderr}"
    );
    assert!(
        stderr.contains("upstreem"),
        "the error names the key\n{stderr}"
    );

    // Fixing the file applies it.
    reload_to(&mut proxy, &good).await;
    assert_eq!(served_by(&proxy, "/new").await, "b");
    assert_eq!(served_by(&proxy, "/old").await, "app", "/old was removed");
}

/// A reload with several problems logs each at its line and column (as `rproxy -t` lists
/// them), counts one failed reload, and the running configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_logs_every_problem_with_its_line() {
    let app = Upstream::named("app").await;
    let b = Upstream::named("b").await;
    let good = two_routes(&app, &b, Some("/old"));
    let mut proxy = start(&good).await;
    let bad = good
        .replace(
            "{ path: /old, upstream: b }",
            "{ path: /old, upstream: nope }",
        )
        .replace(
            "{ path: /, upstream: app }",
            "{ path: /, upstream: app, max_body: huge }",
        )
        .replace("  b:\n", "  b:\n    read_timeout: 3 fortnights\n");
    let yaml = head(proxy.http, proxy.admin) + &bad;
    let line_of = |needle: &str| {
        yaml.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in\n{yaml}"))
    };
    let wanted = [
        (line_of("fortnights"), "upstreams.b.read_timeout"),
        (line_of("nope"), "routes[0].upstream"),
        (line_of("huge"), "routes[1].max_body"),
    ];
    let err_before = proxy.reloads("error").await;
    proxy.rewrite(&yaml);
    assert!(
        proxy
            .wait_reloads_above("error", err_before, RELOAD_WAIT)
            .await,
        "the bad file was not counted as a reload error\n{}",
        proxy.stderr()
    );
    assert_eq!(proxy.reloads("error").await, err_before + 1.0);
    let stderr = proxy.stderr();
    for (line, path) in wanted {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("proxy.yaml:{line}:")) && l.contains(path)),
            "no log line for {path} at line {line}\n{stderr}"
        );
    }
    assert_eq!(
        served_by(&proxy, "/old").await,
        "b",
        "the old routes still serve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_change_needs_restart_and_the_rest_applies() {
    let app = Upstream::named("app").await;
    let b = Upstream::named("b").await;
    let mut proxy = start(&two_routes(&app, &b, None)).await;
    let moved = free_port();

    let before = proxy.reloads("ok").await;
    let yaml = head(moved, proxy.admin) + &two_routes(&app, &b, Some("/new"));
    proxy.rewrite(&yaml);
    assert!(
        proxy.wait_reloads_above("ok", before, RELOAD_WAIT).await,
        "a reload with a changed listen address is not applied\n{}",
        proxy.stderr()
    );
    // The new route is live on the old port; nothing listens on the new one.
    assert_eq!(served_by(&proxy, "/new").await, "b");
    let refused = client()
        .get(format!("http://127.0.0.1:{moved}/new"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the new listen address was bound without a restart: {refused:?}"
    );
    let stderr = proxy.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("listen") && l.contains("restart")),
        "the listen change is logged as needing a restart\n{stderr}"
    );
}
