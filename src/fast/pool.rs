//! Idle keep-alive connections to upstream servers, kept per worker thread: each thread runs a
//! runtime of its own, so a connection is only ever polled by the reactor it is registered with.
//! They belong to their server (`upstream::Backend`) of the published configuration: when a
//! reload drops the server, its idle connections are closed at the next sweep and never reused.
//! A pool keeps up to its `keepalive` per server and thread; past it, the oldest goes first.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use fnv::FnvHashMap;
use tokio::net::TcpStream;

use crate::upstream::Backend;

/// How often a thread drops connections that idled too long or that the server closed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

struct Idle {
    stream: TcpStream,
    /// When it has idled for its `idle_timeout`.
    expires: Instant,
    /// Its server; gone once no configuration has it. (The weak reference also keeps the
    /// server's allocation, so the key below is never another server's.)
    owner: Weak<Backend>,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        now < self.expires && self.owner.strong_count() > 0 && is_open(&self.stream)
    }
}

/// A server's identity as a key: its allocation.
fn key(server: &Arc<Backend>) -> usize {
    Arc::as_ptr(server) as usize
}

#[derive(Default)]
struct Idles {
    by_server: FnvHashMap<usize, Vec<Idle>>,
    sweeping: bool,
}

thread_local! {
    static IDLE: RefCell<Idles> = RefCell::default();
}

/// The most recently used idle connection to `server` that is still open at `now`, if any.
/// (`now` comes from the caller, which has read the clock already.)
pub fn take(server: &Arc<Backend>, now: Instant) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.by_server.get_mut(&key(server))?;
        while let Some(c) = list.pop() {
            if c.usable(now) {
                return Some(c.stream);
            }
        }
        None
    })
}

/// How long a connection may idle, and how many of a server's may (`keepalive`).
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub idle_timeout: Duration,
    pub max: usize,
}

/// Keeps `stream` for the next request to `server`, for at most `keep.idle_timeout` from
/// `since` (when it was last used).
pub fn put(server: &Arc<Backend>, stream: TcpStream, keep: Keep, since: Instant) {
    if keep.max == 0 {
        return;
    }
    let start_sweeper = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.by_server.entry(key(server)).or_default();
        if list.len() >= keep.max {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            expires: since + keep.idle_timeout,
            owner: Arc::downgrade(server),
        });
        !std::mem::replace(&mut idle.sweeping, true)
    });
    if start_sweeper {
        tokio::spawn(sweep());
    }
}

/// Nothing to read and no end of stream: the server has not closed it. Uses the readiness the
/// reactor has seen, so it costs no system call while nothing arrived.
fn is_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Runs on a thread while it has idle connections.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let done = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let now = Instant::now();
            for list in idle.by_server.values_mut() {
                list.retain(|c| c.usable(now));
            }
            idle.by_server.retain(|_, list| !list.is_empty());
            let done = idle.by_server.is_empty();
            if done {
                idle.sweeping = false;
            }
            done
        });
        if done {
            return;
        }
    }
}

/// Idle connections to `server` on this thread (for tests).
pub fn idle_count(server: &Arc<Backend>) -> usize {
    IDLE.with(|idle| {
        idle.borrow()
            .by_server
            .get(&key(server))
            .map_or(0, Vec::len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    const KEEP: Keep = Keep {
        idle_timeout: Duration::from_secs(60),
        max: 4,
    };

    async fn server() -> (TcpListener, Arc<Backend>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let backend = Arc::new(Backend::new(addr, addr.to_string(), 1, true));
        (listener, backend)
    }

    async fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_handed_out() {
        let (listener, backend) = server().await;
        let (client, mut server) = connection(&listener).await;
        put(&backend, client, KEEP, Instant::now());
        assert_eq!(idle_count(&backend), 1);
        server.shutdown().await.unwrap();
        drop(server);
        // Let the reactor see the end of stream.
        let mut open = true;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = Instant::now();
            open = IDLE.with(|i| {
                i.borrow().by_server[&key(&backend)]
                    .iter()
                    .all(|c| c.usable(now))
            });
            if !open {
                break;
            }
        }
        assert!(!open, "the closed connection still looks open");
        assert!(take(&backend, Instant::now()).is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_dropped() {
        let (listener, backend) = server().await;
        let (client, _server) = connection(&listener).await;
        let expired = Keep {
            idle_timeout: Duration::ZERO,
            ..KEEP
        };
        put(&backend, client, expired, Instant::now());
        assert!(take(&backend, Instant::now()).is_none());
        let (client, _server2) = connection(&listener).await;
        put(&backend, client, KEEP, Instant::now());
        assert!(take(&backend, Instant::now()).is_some());
    }

    #[tokio::test]
    async fn keepalive_caps_the_idle_connections_and_zero_keeps_none() {
        let (listener, backend) = server().await;
        let mut servers = Vec::new();
        for _ in 0..6 {
            let (client, server) = connection(&listener).await;
            servers.push(server);
            put(&backend, client, KEEP, Instant::now());
        }
        assert_eq!(idle_count(&backend), 4);
        let (client, _server) = connection(&listener).await;
        let none = Keep { max: 0, ..KEEP };
        let (_, other) = server().await;
        put(&other, client, none, Instant::now());
        assert_eq!(idle_count(&other), 0);
    }

    #[tokio::test]
    async fn a_server_no_configuration_has_loses_its_idle_connections() {
        let (listener, backend) = server().await;
        let (client, _server) = connection(&listener).await;
        put(&backend, client, KEEP, Instant::now());
        let same_addr = Arc::new(Backend::new(backend.addr, "again".into(), 1, true));
        assert!(
            take(&same_addr, Instant::now()).is_none(),
            "another pool's server"
        );
        let k = key(&backend);
        drop(backend);
        let now = Instant::now();
        let usable = IDLE.with(|i| i.borrow().by_server[&k].iter().any(|c| c.usable(now)));
        assert!(!usable, "a dropped server's connection is not reused");
    }
}
