//! Idle keep-alive connections to upstream servers, kept per worker thread: each thread runs a
//! runtime of its own, so a connection is only ever polled by the reactor it is registered with.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fnv::FnvHashMap;
use tokio::net::TcpStream;

/// Idle connections kept per server and thread; the oldest goes first.
const MAX_IDLE: usize = 64;
/// How often a thread drops connections that idled too long or that the server closed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

struct Idle {
    stream: TcpStream,
    /// When it has idled for its `idle_timeout`.
    expires: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        now < self.expires && is_open(&self.stream)
    }
}

#[derive(Default)]
struct Idles {
    by_addr: FnvHashMap<SocketAddr, Vec<Idle>>,
    sweeping: bool,
}

thread_local! {
    static IDLE: RefCell<Idles> = RefCell::default();
}

/// The most recently used idle connection to `addr` that is still open at `now`, if any.
/// (`now` comes from the caller, which has read the clock already.)
pub fn take(addr: SocketAddr, now: Instant) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.by_addr.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.usable(now) {
                return Some(c.stream);
            }
        }
        None
    })
}

/// Keeps `stream` for the next request to `addr`, for at most `idle_timeout` from `since`
/// (when it was last used).
pub fn put(addr: SocketAddr, stream: TcpStream, idle_timeout: Duration, since: Instant) {
    let start_sweeper = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.by_addr.entry(addr).or_default();
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            expires: since + idle_timeout,
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
            for list in idle.by_addr.values_mut() {
                list.retain(|c| c.usable(now));
            }
            idle.by_addr.retain(|_, list| !list.is_empty());
            let done = idle.by_addr.is_empty();
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

/// Idle connections to `addr` on this thread (for tests).
pub fn idle_count(addr: SocketAddr) -> usize {
    IDLE.with(|idle| idle.borrow().by_addr.get(&addr).map_or(0, Vec::len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        put(addr, client, Duration::from_secs(60), Instant::now());
        assert_eq!(idle_count(addr), 1);
        server.shutdown().await.unwrap();
        drop(server);
        // Let the reactor see the end of stream.
        let mut open = true;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = Instant::now();
            open = IDLE.with(|i| i.borrow().by_addr[&addr].iter().all(|c| c.usable(now)));
            if !open {
                break;
            }
        }
        assert!(!open, "the closed connection still looks open");
        assert!(take(addr, Instant::now()).is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let _server = listener.accept().await.unwrap();
        put(addr, client, Duration::ZERO, Instant::now());
        assert!(take(addr, Instant::now()).is_none());
        let client = TcpStream::connect(addr).await.unwrap();
        let _server2 = listener.accept().await.unwrap();
        put(addr, client, Duration::from_secs(60), Instant::now());
        assert!(take(addr, Instant::now()).is_some());
    }
}
