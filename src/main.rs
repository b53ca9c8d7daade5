//! The `rproxy` binary: parses flags, starts logging, loads and compiles the configuration,
//! then builds and runs the server. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
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
    #[arg(
        short = 'c',
        long = "config",
        default_value = "proxy.yaml",
        global = true
    )]
    config: PathBuf,
    /// Check the configuration and exit: 0 and `ok`, or 1 and every problem.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run as a Kubernetes ingress controller: routes come from Ingresses (in-cluster, or the
    /// cluster of KUBECONFIG); `-c`, if given, is the base (listeners, server settings, routes).
    #[arg(long)]
    kubernetes: bool,
    /// The IngressClass served with --kubernetes.
    #[arg(long = "ingress-class", default_value = rproxy::kubernetes::DEFAULT_CLASS)]
    ingress_class: String,
    /// With --kubernetes: also serve Ingresses that name no class (as when our IngressClass
    /// is the cluster's default).
    #[arg(long = "watch-ingress-without-class")]
    watch_ingress_without_class: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the admin listener (listen.admin of the file, or --admin) and exit 0 on a 200, 1
    /// otherwise: for a container's HEALTHCHECK.
    Healthcheck {
        /// Admin address to ask instead of the file's listen.admin.
        #[arg(long)]
        admin: Option<String>,
        /// Path to ask: /readyz (ready for traffic) or /healthz (the process runs).
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
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
    for (key, addr) in l.addrs() {
        std::net::TcpListener::bind(addr).map_err(|e| {
            let hint = low_port_hint(addr, &e);
            format!("listen.{key}: cannot listen on {addr}: {e}{hint}")
        })?;
    }
    Ok(())
}

/// What to do when a port below 1024 may not be bound: said at start, in words.
fn low_port_hint(addr: &str, e: &std::io::Error) -> &'static str {
    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    if e.kind() == std::io::ErrorKind::PermissionDenied && port.is_some_and(|p| p < 1024) {
        " (a port below 1024 needs CAP_NET_BIND_SERVICE, or the sysctl \
         net.ipv4.ip_unprivileged_port_start at or below it; or listen on a port >= 1024: \
         see deploy/docker/README.md)"
    } else {
        ""
    }
}

/// `rproxy healthcheck`: 0 on a 200 from the admin listener, 1 with the reason otherwise.
fn healthcheck(config: &std::path::Path, admin: Option<&str>, path: &str, secs: u64) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let timeout = std::time::Duration::from_secs(secs.max(1));
    let result = rproxy::healthcheck::admin_address(admin, config, &env)
        .and_then(|addr| rproxy::healthcheck::probe(addr, path, timeout));
    match result {
        Ok(status) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

/// `rproxy --kubernetes`: the base configuration, the cluster's address, then the server.
fn kubernetes(cli: &Cli, config_given: bool) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let base = match config_given {
        true => rproxy::config::load_file(&cli.config, &env),
        false => rproxy::kubernetes::default_base(),
    };
    let checked = base.and_then(|loaded| {
        let compiled = rproxy::compile(&loaded, None)?;
        Ok((loaded, compiled))
    });
    let (loaded, compiled) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = preflight(&loaded) {
        tracing::error!("{e}");
        return ExitCode::from(1);
    }
    let kube = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(kube::Config::infer())
                .map_err(|e| e.to_string())
        });
    let kube = match kube {
        Ok(k) => k,
        Err(e) => {
            tracing::error!("--kubernetes: no cluster to talk to (in-cluster service account or KUBECONFIG): {e}");
            return ExitCode::from(1);
        }
    };
    let options = rproxy::kubernetes::Options {
        ingress_class: cli.ingress_class.clone(),
        default_class: cli.watch_ingress_without_class,
    };
    let source = rproxy::Source::Kubernetes {
        kube: Box::new(kube),
        options,
        base_file: config_given.then(|| cli.config.clone()),
    };
    let (server, state) = match rproxy::build_server_for(&loaded, compiled, source) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(class = %cli.ingress_class, "rproxy {VERSION} starting as a Kubernetes ingress controller");
    server.run(RunArgs {
        shutdown_signal: Box::new(rproxy::signals::Signals { state }),
    });
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config_given = matches.value_source("config") == Some(ValueSource::CommandLine);
    if let Some(Command::Healthcheck {
        admin,
        path,
        timeout,
    }) = &cli.command
    {
        return healthcheck(&cli.config, admin.as_deref(), path, *timeout);
    }
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
    if cli.kubernetes {
        return kubernetes(&cli, config_given);
    }
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
