//! Sticky sessions against real uvicorn workers (`examples/fastapi/app.py`): `balance: cookie`
//! sets a signed cookie naming the worker that answered; the same cookie lands on that worker
//! 100 times out of 100; it moves (and is set anew) when that worker fails health; a forged or
//! foreign cookie is not believed; a WebSocket upgrade follows the cookie.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::python_apps::{fastapi_workers, PyApp};
use common::{client, client_builder, wait_until, Proxy};
use reqwest::header::{COOKIE, SET_COOKIE};

async fn setup(pool_extra: &str) -> (Vec<PyApp>, Proxy) {
    let (workers, servers) = fastapi_workers(3).await;
    let proxy = Proxy::builder()
        .https()
        .yaml(&format!(
            "upstreams:\n  fastapi:\n    servers: [{}]\n{pool_extra}    health:\n      path: /health\n      \
             interval: 200ms\n      timeout: 1s\n      rise: 1\n      fall: 1\n\
             routes:\n  - path: /\n    upstream: fastapi\n",
            servers.join(", ")
        ))
        .start()
        .await;
    (workers, proxy)
}

/// The worker that answered `GET /api/hello` with `cookie` (if any), and the Set-Cookie it got.
async fn hello(http: &reqwest::Client, url: &str, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut req = http.get(url);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let resp = req.send().await.expect("GET /api/hello");
    assert_eq!(resp.status().as_u16(), 200);
    let set = resp
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("text").to_string());
    let body = resp.text().await.expect("body from the app");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON from the app");
    (json["worker"].as_u64().expect("worker") as u16, set)
}

/// `name=value` of a Set-Cookie line.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cookie_lands_on_the_same_worker_until_it_fails() {
    let (workers, proxy) = setup("    balance: cookie\n").await;
    let http = client();
    let url = proxy.url("/api/hello");

    // Without a cookie, requests spread, and each answer names its worker in a cookie.
    let mut cookies = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let (worker, set) = hello(&http, &url, None).await;
        let set = set.expect("a Set-Cookie on a request without the cookie");
        assert!(set.starts_with("rproxy_fastapi="), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
        assert!(
            !set.contains(&worker.to_string()),
            "the cookie shows the address: {set}"
        );
        cookies.insert(worker, pair(&set));
    }
    assert_eq!(
        cookies.len(),
        3,
        "six requests without a cookie reached {cookies:?}"
    );

    // With a cookie: that worker, 100 times out of 100, and no new Set-Cookie.
    let (&sticky_worker, cookie) = cookies.iter().next().unwrap();
    for i in 0..100 {
        let (worker, set) = hello(&http, &url, Some(cookie)).await;
        assert_eq!(
            worker, sticky_worker,
            "request {i} with the cookie went elsewhere"
        );
        assert_eq!(set, None, "request {i}: the cookie was set again");
    }

    // A forged value is not believed: the request is balanced and gets a real cookie.
    let (_, set) = hello(
        &http,
        &url,
        Some("rproxy_fastapi=0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert!(set.is_some(), "a forged cookie was taken as a server's");

    // The worker fails health: the cookie's requests move, and get a cookie for their new worker.
    let failing = workers.iter().find(|w| w.port == sticky_worker).unwrap();
    let resp = http.post(failing.url("/admin/fail")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let moved = wait_until(Duration::from_secs(5), || async {
        hello(&http, &url, Some(cookie)).await.0 != sticky_worker
    })
    .await;
    assert!(
        moved,
        "requests with the cookie of a failed worker still went to it"
    );
    let (moved_to, set) = hello(&http, &url, Some(cookie)).await;
    assert_ne!(moved_to, sticky_worker);
    let set = set.expect("a new cookie after the move");
    assert_eq!(
        pair(&set),
        cookies[&moved_to],
        "the new cookie names the new worker"
    );
    // Then the new cookie sticks.
    let new_cookie = pair(&set);
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(hello(&http, &url, Some(&new_cookie)).await.0);
    }
    assert_eq!(seen, BTreeSet::from([moved_to]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_block_names_the_cookie_and_its_lifetime() {
    let sticky = "    balance: least_conn\n    sticky:\n      cookie: srv_id\n      ttl: 1h\n      secret: a-shared-secret-of-replicas\n";
    let (_workers, proxy) = setup(sticky).await;
    let https = client_builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/api/hello", proxy.https_addr().port());
    let (worker, set) = hello(&https, &url, None).await;
    let set = set.expect("Set-Cookie");
    assert!(set.starts_with("srv_id="), "{set}");
    assert!(set.contains("Max-Age=3600"), "{set}");
    assert!(
        set.contains("Secure"),
        "an https answer's cookie is Secure: {set}"
    );
    let cookie = pair(&set);
    for _ in 0..20 {
        assert_eq!(hello(&https, &url, Some(&cookie)).await.0, worker);
    }
    // Among other cookies, in either order, over plain HTTP too.
    let mixed = format!("theme=dark; {cookie}; lang=en");
    assert_eq!(
        hello(&client(), &proxy.url("/api/hello"), Some(&mixed))
            .await
            .0,
        worker
    );
}
