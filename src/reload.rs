//! Hot reload. Triggers: SIGHUP, a change of the configuration file (polled through symlinks,
//! so editors' rename-writes and Kubernetes ConfigMap `..data` swaps are seen), and a change in
//! the certificate directory. Each runs load -> validate -> compile beside the running state ->
//! publish; a bad file changes nothing and is logged and counted. `publish` is that last step,
//! shared with every other source of configuration (`kubernetes::controller`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::model::{ListenAddr, ListenConfig};
use crate::config::{self, ConfigError, Loaded};
use crate::metrics;
use crate::routing::compile::{certs_root, compile_with_certs};
use crate::state::{Runtime, State};
use crate::tls::InlineCert;
use crate::upstream::{health, Pool};

/// How often the files are checked, and how long a change must hold still before it is read.
const POLL: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_millis(150);

/// What the running configuration was loaded from.
struct Running {
    /// Settings fixed at start (listeners, threads): a reload cannot change them.
    at_start: Loaded,
    config_print: Option<u64>,
    certs_print: (Option<u64>, Option<u64>),
    certs_dir: PathBuf,
}

/// Reloads the configuration on request; shared by the signal, the poller and tests.
pub struct Reloader {
    path: PathBuf,
    state: Arc<State>,
    running: Mutex<Running>,
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub config::ConfigError);

impl Reloader {
    pub fn new(loaded: Loaded, state: Arc<State>) -> Reloader {
        let certs_dir = certs_root(&loaded);
        let running = Running {
            config_print: file_print(&loaded.path),
            certs_print: certs_print(&certs_dir),
            certs_dir,
            at_start: loaded,
        };
        Reloader {
            path: running.at_start.path.clone(),
            state,
            running: Mutex::new(running),
        }
    }

    /// Loads, compiles and publishes the file now. On error the running state is untouched.
    pub fn reload(&self, why: &str) -> Result<(), ReloadError> {
        let Ok(mut running) = self.running.lock() else {
            return Err(ReloadError(
                vec![config::Problem::at("reload", "reload state poisoned")].into(),
            ));
        };
        running.config_print = file_print(&self.path);
        let result = self.apply(&mut running);
        let _file = tracing::info_span!("reload", config = %self.path.display()).entered();
        record(why, result.as_ref().map(|_| ()).map_err(|e| &e.0));
        result
    }

    fn apply(&self, running: &mut Running) -> Result<(), ReloadError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut loaded = config::load_file(&self.path, &env).map_err(ReloadError)?;
        keep_fixed_settings(&running.at_start, &mut loaded);
        publish(&self.state, &loaded, &[]).map_err(ReloadError)?;
        running.certs_dir = certs_root(&loaded);
        running.certs_print = certs_print(&running.certs_dir);
        Ok(())
    }

    /// What changed since the last reload: the file or the certificate directory.
    fn changed(&self) -> Option<&'static str> {
        let Ok(running) = self.running.lock() else {
            return None;
        };
        let config = file_print(&self.path);
        // A file missing for a moment (mid-swap) is not a change.
        if config.is_some() && config != running.config_print {
            return Some("file change");
        }
        (certs_print(&running.certs_dir) != running.certs_print)
            .then_some("certificate files changed")
    }
}

/// Compiles `loaded` (with certificates held in memory, `inline`) beside the running
/// configuration, warms up its new pools and publishes it with its certificates. On any
/// problem nothing changes: the running configuration stays. Every source of configuration
/// (the file, Kubernetes) ends here. Blocks for up to a probe timeout: call it off the async
/// threads, inside a tokio runtime so probes can be spawned.
pub fn publish(state: &State, loaded: &Loaded, inline: &[InlineCert]) -> Result<(), ConfigError> {
    let current = state.runtime();
    let certs = state.certs.as_ref().map(|r| r.store());
    let compiled = compile_with_certs(loaded, inline, Some(&current), certs.as_deref())?;
    warm_up(&current, &compiled.runtime);
    if let (Some(resolver), Some(store)) = (&state.certs, compiled.certs) {
        resolver.swap(store);
    }
    state.publish(compiled.runtime);
    Ok(())
}

/// Counts and logs the outcome of one attempt to change the configuration (`why`: its trigger).
pub fn record(why: &str, result: Result<(), &ConfigError>) {
    metrics::config_reloaded(result.is_ok());
    match result {
        Ok(()) => tracing::info!("configuration reloaded ({why})"),
        Err(e) => {
            for p in &e.problems {
                tracing::error!("reload ({why}) rejected, the running configuration stays: {p}");
            }
        }
    }
}

/// Probes the pools a reload creates before they are published (bounded by their probe
/// timeout), so servers that are up get traffic from the first request on.
fn warm_up(old: &Runtime, new: &Runtime) {
    let fresh: Vec<&Arc<Pool>> = new
        .pools
        .iter()
        .filter(|(name, pool)| !old.pools.get(*name).is_some_and(|o| Arc::ptr_eq(o, pool)))
        .map(|(_, pool)| pool)
        .filter(|pool| pool.health.is_some())
        .collect();
    if fresh.is_empty() || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    for pool in &fresh {
        health::spawn(pool);
    }
    let longest = fresh
        .iter()
        .filter_map(|p| p.health.as_ref())
        .map(|h| h.timeout.0)
        .max();
    let deadline = Instant::now() + longest.unwrap_or_default() + Duration::from_millis(250);
    while Instant::now() < deadline && !fresh.iter().all(|p| p.probed_once()) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Listeners and threads are bound at start: a change is reported, and the rest applies.
pub fn keep_fixed_settings(at_start: &Loaded, loaded: &mut Loaded) {
    let (old, new) = (&at_start.config, &mut loaded.config);
    let addrs = |l: &ListenConfig| {
        let addr = |a: &Option<ListenAddr>| a.as_ref().map(|a| a.addr.clone());
        (addr(&l.http), addr(&l.https), l.admin.clone())
    };
    if addrs(&old.listen) != addrs(&new.listen) {
        tracing::warn!(
            "listen addresses changed: that needs a restart; the rest of the change applies"
        );
        // `proxy_protocol` is read per connection, so it changes with the rest.
        let keep = |old: &Option<ListenAddr>, new: &Option<ListenAddr>| {
            let on = new.as_ref().is_some_and(|n| n.proxy_protocol);
            old.clone().map(|a| ListenAddr {
                proxy_protocol: on,
                ..a
            })
        };
        new.listen = ListenConfig {
            http: keep(&old.listen.http, &new.listen.http),
            https: keep(&old.listen.https, &new.listen.https),
            admin: old.listen.admin.clone(),
        };
    }
    if old.server.threads != new.server.threads {
        tracing::warn!(
            "server.threads changed: that needs a restart; the rest of the change applies"
        );
        new.server.threads = old.server.threads;
    }
}

fn file_print(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = fnv::FnvHasher::default();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// The certificate directory and its `acme/` subdirectory (issued certificates).
fn certs_print(dir: &Path) -> (Option<u64>, Option<u64>) {
    (dir_print(dir), dir_print(&dir.join("acme")))
}

/// Names, sizes and modification times of the files in a directory (symlinks followed).
fn dir_print(dir: &Path) -> Option<u64> {
    let mut entries: Vec<(String, u64, std::time::SystemTime)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok().filter(|m| m.is_file())?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().ok()?,
            ))
        })
        .collect();
    entries.sort();
    let mut h = fnv::FnvHasher::default();
    entries.hash(&mut h);
    Some(h.finish())
}

/// The background service: SIGHUP and the file poller.
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
}

impl ReloadService {
    async fn reload(&self, why: &'static str) {
        let reloader = self.reloader.clone();
        let handle = tokio::runtime::Handle::current();
        // Compiling resolves upstream names and warming up waits for probes: keep it off the
        // async threads, inside this runtime so probes can be spawned.
        let _ = tokio::task::spawn_blocking(move || {
            let _runtime = handle.enter();
            reloader.reload(why)
        })
        .await;
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("SIGHUP").await;
                }
                _ = tokio::time::sleep(POLL) => {
                    if let Some(why) = self.reloader.changed() {
                        tokio::time::sleep(SETTLE).await;
                        self.reload(why).await;
                    }
                }
            }
        }
    }
}
