//! rproxy's own request path for the common case: a request routed to an upstream pool, with no
//! body or a body of known length, is forwarded over per-thread keep-alive upstream connections
//! and its response relayed, for a fraction of the work of pingora's general proxy. HTTP/1.1
//! connections (plain or TLS) are read by `h1.rs`; HTTP/2 streams, which pingora has already
//! parsed, by `h2.rs`. Anything else (static files, WebSocket, chunked or unsized uploads, redirects,
//! ACME, every 4xx that pingora words) goes to pingora's proxy untouched. Every decision about
//! the request is `crate::request`'s; this module reads and writes the bytes.
//!
//! Which engine owns which request, by measurement (BENCHMARKS.md, "Which engine"): this one
//! takes every request it can, because pingora's path, answering the same requests under the
//! same rules (`server.fast_path: false`), served 0.29-0.53x the better of nginx and HAProxy
//! from 10 to 1,000 connections at 2-3.5x the CPU per request, where this one served
//! 0.92-1.18x. Pingora's path keeps what this one does not carry yet: static files (local
//! answers), WebSocket tunnels, chunked and unsized uploads, HTTP/2 uploads without a length or
//! over 64 KiB, uploads over `max_body` (413 with the lingering read), `Expect` (answered by
//! rproxy), HTTP/1.0, malformed heads (400), redirects and ACME challenges. On an
//! HTTP/1.1 connection, the rest of it stays there after such a request.

pub mod body;
mod buffers;
mod exchange;
mod h1;
mod h2;
pub mod head;
pub mod pool;
mod relay;
mod replay;
mod squeeze;
mod timer;

use std::net::IpAddr;
use std::sync::Arc;

pub use h1::Left;

use crate::request::client::{client_of, ClientAddr};
use crate::request::headers::sticky_value;
use crate::request::limits::{self, Refusal};
use crate::request::Listener;
use crate::routing::{InflightGuard, Route, Target};
use crate::state::{Runtime, State};
use crate::upstream::{ActiveGuard, Pool, SelectKey};
use head::Request;

/// Bodies up to this size are read whole before the request goes upstream, so a request can
/// be sent again on another connection; larger ones are streamed (HTTP/1.1 only).
const PREREAD_BODY: u64 = 64 << 10;

/// The fast path of one listener.
pub struct Engine {
    pub state: Arc<State>,
    pub listener: Listener,
}

/// The route a request takes on the fast path, before anything is committed.
struct Routed {
    rt: Arc<Runtime>,
    route: Arc<Route>,
    pool: Arc<Pool>,
}

/// A request the fast path forwards: everything decided before the first upstream byte.
struct Forward {
    rt: Arc<Runtime>,
    route: Arc<Route>,
    pool: Arc<Pool>,
    backend: ActiveGuard,
    _inflight: InflightGuard,
}

/// What `admit` decided.
enum Plan {
    Refuse(Arc<Route>, Arc<Pool>, Refusal),
    Forward(Forward),
}

/// What `admit` decided, for whom.
struct Admitted {
    client: ClientAddr,
    plan: Plan,
}

impl Engine {
    /// The route of a request the fast path can take, or `None` for pingora's path. No side
    /// effects, so the request can still go elsewhere untouched.
    fn route(&self, req: &Request) -> Option<Routed> {
        let rt = self.state.runtime();
        let path = req.path();
        if limits::head_too_large(req.len, &rt.settings)
            || limits::redirect_port(self.listener, &rt, req.host, path).is_some()
            || limits::is_acme_challenge(self.listener, &rt, path)
        {
            return None;
        }
        let route = rt.routes.lookup(req.host, path)?.clone();
        let Target::Upstream(pool) = &route.target else {
            return None;
        };
        // HTTP/2 and TLS to the servers are pingora's connectors' (`upstream::peer`).
        if !pool.transport.is_plain_http1() {
            return None;
        }
        if limits::body_too_large(req.content_length, &route) {
            return None;
        }
        let pool = pool.clone();
        Some(Routed { rt, route, pool })
    }

    /// Applies the route's limits and picks a server for the request `req` from `peer`: from
    /// here on the request is ours.
    fn admit(&self, routed: Routed, req: &Request, peer: IpAddr) -> Admitted {
        let client = client_of(peer, req, &routed.rt.settings.trusted_proxies);
        let plan = Self::plan(routed, req, client.ip);
        Admitted { client, plan }
    }

    fn plan(routed: Routed, req: &Request, ip: IpAddr) -> Plan {
        let Routed { rt, route, pool } = routed;
        let inflight = match limits::admission(&route, Some(ip)) {
            Ok(guard) => guard,
            Err(refusal) => return Plan::Refuse(route, pool, refusal),
        };
        let key = SelectKey {
            client_ip: Some(ip),
            uri: req.target,
            sticky: sticky_value(req, &pool),
        };
        let Some(backend) = pool.select(&key, &[]) else {
            tracing::warn!(route = %route.name, upstream = %pool.name, "no healthy server");
            return Plan::Refuse(route, pool, Refusal::NoServer);
        };
        Plan::Forward(Forward {
            rt,
            route,
            pool,
            backend: backend.begin(),
            _inflight: inflight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    /// What an idle HTTP/1.1 connection holds is its `serve` future (plus the socket): the
    /// state of an exchange lives on the heap only while a request runs.
    #[tokio::test]
    async fn an_idle_connection_holds_a_small_future() {
        let yaml = "listen: { http: \"127.0.0.1:1\" }\nupstreams:\n  app:\n    servers: [127.0.0.1:9]\nroutes:\n  - { path: /, upstream: app }\n";
        let config = crate::config::load_str(yaml, "t.yaml", &|_| None).unwrap();
        let loaded = crate::config::Loaded {
            config,
            path: "t.yaml".into(),
            dir: ".".into(),
            source: Default::default(),
        };
        let compiled = crate::compile(&loaded, None).unwrap();
        let state = Arc::new(State::new(compiled.runtime, None));
        let engine = Engine {
            state,
            listener: Listener::Http,
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let stream: pingora_core::protocols::Stream =
            Box::new(pingora_core::protocols::l4::stream::Stream::from(c));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let fut = engine.serve(stream, tokio::time::Instant::now(), &rx);
        let size = std::mem::size_of_val(&fut);
        assert!(size < 2048, "serve future: {size} bytes");
    }
}
