//! A raw HTTP/1 request head (request line, `Name: value` lines) -> `RequestHeader` ->
//! `headers::rewrite_request` / `strip_hop_by_hop`. Invariant: no hop-by-hop header reaches the
//! upstream (RFC 9110 7.6.1), nor any header the client's `Connection` names, except the
//! `Upgrade` + `Connection: upgrade` pair of a WebSocket handshake, which is kept on purpose.
//! The first input byte picks the options (upgrade kept, proto, client IP, full rewrite or strip).
//! `fuzz/regressions/headers/` holds the minimized inputs of past findings.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use rproxy::proxy::headers::{rewrite_request, strip_hop_by_hop, ClientInfo, HOP_BY_HOP};
use rproxy::routing::{Route, Target};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let keep_upgrade = flags & 1 != 0;
    let full = flags & 2 != 0;
    let proto = if flags & 4 != 0 { "https" } else { "http" };
    let ip = (flags & 8 != 0).then(|| std::net::IpAddr::from([192, 0, 2, flags]));

    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or(b"/");
    let Ok(mut req) = RequestHeader::build(method, target, None)
        .or_else(|_| RequestHeader::build("GET", b"/", None))
    else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let Ok(value) = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()) else {
            continue;
        };
        // pingora's parser refuses a request with an invalid name; a valid one is ASCII.
        if HeaderName::from_bytes(name).is_err() {
            continue;
        }
        let Ok(name) = String::from_utf8(name.to_vec()) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }

    let named = connection_tokens(&req);
    let had_upgrade = req.headers.get("upgrade").cloned();
    let host = req.headers.get("host").cloned();

    if full {
        let route = Route::new("r".into(), "/", Target::Static(".".into()));
        let client = ClientInfo {
            ip,
            proto,
            host: host.as_ref(),
            upgrade: keep_upgrade,
        };
        if rewrite_request(&mut req, &client, &route).is_err() {
            return;
        }
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), proto);
        if let Some(ip) = ip {
            assert_eq!(
                req.headers.get("x-real-ip").unwrap(),
                ip.to_string().as_str()
            );
        }
    } else {
        strip_hop_by_hop(&mut req, keep_upgrade);
    }

    let kept = keep_upgrade && had_upgrade.is_some();
    for name in HOP_BY_HOP {
        if kept && (*name == "upgrade" || *name == "connection") {
            continue;
        }
        assert!(
            req.headers.get(*name).is_none(),
            "hop-by-hop `{name}` survived: {:?}",
            req.headers
        );
    }
    if kept {
        assert_eq!(req.headers.get("upgrade"), had_upgrade.as_ref());
        assert_eq!(req.headers.get("connection").unwrap(), "upgrade");
    }
    // Headers the client's Connection names, unless the rewrite sets them itself.
    let ours = [
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
        "host",
    ];
    for name in &named {
        let name = name.as_str();
        if (kept && (name == "upgrade" || name == "connection")) || (full && ours.contains(&name)) {
            continue;
        }
        assert!(
            req.headers.get(name).is_none(),
            "`{name}` is named by Connection but survived: {:?}",
            req.headers
        );
    }
});

/// Every token of every `Connection` value, read as bytes (a value need not be visible ASCII).
fn connection_tokens(req: &RequestHeader) -> Vec<HeaderName> {
    req.headers
        .get_all("connection")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect()
}
