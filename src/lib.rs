//! rproxy: an HTTP/2-first, TLS-terminating reverse proxy and load balancer on pingora.
//!
//! The pipeline is load (`config`) -> validate -> compile (`routing::compile`) -> publish
//! (`state`) -> serve (`server`). A request takes rproxy's own path (`fast`) when it is the
//! common case, pingora's proxy (`proxy`) otherwise. `main.rs` only parses flags and runs it.

pub mod acme;
pub mod admin;
pub mod config;
pub mod fast;
pub mod healthcheck;
pub mod kubernetes;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod request;
pub mod routing;
pub mod server;
pub mod signals;
pub mod sniff;
pub mod state;
pub mod tls;
pub mod upstream;

pub use routing::compile::{compile, Compiled};
pub use server::{build_server, build_server_for, Source};

/// Loads, validates and compiles a configuration file: what `rproxy -t` checks.
pub fn check(
    path: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(config::Loaded, Compiled), config::ConfigError> {
    let loaded = config::load_file(path, env)?;
    let compiled = compile(&loaded, None)?;
    Ok((loaded, compiled))
}
