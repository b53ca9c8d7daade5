//! `rproxy healthcheck`: one GET to the admin listener (`/readyz` unless told otherwise), for a
//! container's `HEALTHCHECK` or an exec probe, where the image has no curl. It owns finding the
//! admin address (flag, else `listen.admin` of the configuration file) and reading the answer.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::config::{self, ConfigError};

/// The most of an answer that is read: the status line is all that counts.
const MAX_ANSWER: u64 = 4 << 10;

/// Why the check did not see a 200.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{file}: no listen.admin; the health check asks the admin listener (or pass --admin)")]
    NoAdmin { file: String },
    #[error("admin address `{addr}`: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}{path}: not an HTTP answer")]
    NotHttp { addr: SocketAddr, path: String },
    #[error("{addr}{path}: {status_line}")]
    NotOk {
        addr: SocketAddr,
        path: String,
        status_line: String,
    },
}

/// The admin address to ask: `admin` when given, else the configuration's `listen.admin`.
/// A wildcard address (`0.0.0.0`, `[::]`) is asked on loopback.
pub fn admin_address(
    admin: Option<&str>,
    config_path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SocketAddr, HealthcheckError> {
    let written = match admin {
        Some(a) => a.to_string(),
        None => config::load_file(config_path, env)?
            .config
            .listen
            .admin
            .ok_or_else(|| HealthcheckError::NoAdmin {
                file: config_path.display().to_string(),
            })?,
    };
    resolve(&written).map(reachable)
}

fn resolve(addr: &str) -> Result<SocketAddr, HealthcheckError> {
    let bad = |reason: String| HealthcheckError::BadAddress {
        addr: addr.to_string(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".to_string()))
}

/// A wildcard listen address, as reachable from this host.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// GETs `path` from the admin listener at `addr`; Ok with the status line on a 200.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, HealthcheckError> {
    let io = |source| HealthcheckError::Io { addr, source };
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    conn.set_read_timeout(Some(timeout)).map_err(io)?;
    conn.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    conn.take(MAX_ANSWER).read_to_end(&mut answer).map_err(io)?;
    let status_line = status_line(&answer).ok_or_else(|| HealthcheckError::NotHttp {
        addr,
        path: path.to_string(),
    })?;
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(status_line)
    } else {
        Err(HealthcheckError::NotOk {
            addr,
            path: path.to_string(),
            status_line,
        })
    }
}

/// The first line of an HTTP/1.x answer, or None when the bytes are not one.
fn status_line(answer: &[u8]) -> Option<String> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    line.starts_with("HTTP/1.").then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(b"HTTP/1.1 200 OK\r\nx: y\r\n\r\nready\n").as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_line(b""), None);
    }

    #[test]
    fn wildcard_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9901".parse().expect("addr");
        assert_eq!(reachable(any), "127.0.0.1:9901".parse().expect("addr"));
        let any6: SocketAddr = "[::]:9901".parse().expect("addr");
        assert_eq!(reachable(any6), "[::1]:9901".parse().expect("addr"));
    }

    #[test]
    fn no_admin_listener_is_said_in_words() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, "listen:\n  http: 127.0.0.1:8080\n").expect("write");
        let err = admin_address(None, &path, &|_| None).expect_err("no admin");
        assert!(err.to_string().contains("no listen.admin"), "{err}");
    }

    #[test]
    fn a_closed_port_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = probe(addr, "/readyz", Duration::from_secs(1)).expect_err("closed");
        assert!(matches!(err, HealthcheckError::Io { .. }), "{err}");
    }
}
