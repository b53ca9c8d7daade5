//! The `rproxy` binary: parses flags, starts logging, loads and compiles the configuration,
//! then builds and runs the server. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use pingora_core::server::RunArgs;

/// jemalloc: fewer instructions per request than glibc malloc and, after bursts of connections,
/// memory that is reused instead of growing (BENCHMARKS.md, "Profile").
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (pingora 0.9, TLS: rustls with ring)"
);

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// An HTTP/2-first, TLS-terminating reverse proxy and load balancer.
#[derive(Debug, Parser)]
#[command(name = "rproxy", version = VERSION)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "proxy.yaml")]
    config: PathBuf,
    /// Check the configuration and exit: 0 and `ok`, or 1 and every problem.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_tracing(format: LogFormat) {
    let filter = std::env::var("RPROXY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("ignoring the log filter `{filter}`: {e}");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Fails early, with the key path, when a listen address cannot be bound.
fn preflight(loaded: &rproxy::config::Loaded) -> Result<(), String> {
    let l = &loaded.config.listen;
    for (key, addr) in [("http", &l.http), ("https", &l.https), ("admin", &l.admin)] {
        if let Some(addr) = addr {
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("listen.{key}: cannot listen on {addr}: {e}"))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = |name: &str| std::env::var(name).ok();
    if cli.test {
        return match rproxy::check(&cli.config, &env) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(1)
            }
        };
    }
    init_tracing(cli.log_format);
    let (loaded, compiled) = match rproxy::check(&cli.config, &env) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                tracing::error!("{p}");
            }
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = preflight(&loaded) {
        tracing::error!("{e}");
        return ExitCode::from(1);
    }
    let (server, state) = match rproxy::build_server(&loaded, compiled) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    rproxy::metrics::config_applied();
    tracing::info!(config = %cli.config.display(), "rproxy {VERSION} starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(rproxy::signals::Signals { state }),
    });
    ExitCode::SUCCESS
}
