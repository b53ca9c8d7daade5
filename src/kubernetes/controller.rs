//! The controller loop: a watcher and reflector store per kind (IngressClass, Ingress, Service,
//! EndpointSlice, TLS Secret), all changes debounced (quiet for `quiet`, at most `max` after
//! the first), then translate -> `Sink::publish` (in rproxy: `reload::publish`, the same step
//! as a file reload). Nothing is published before every kind has been listed once. A watch
//! error or 410 Gone makes that watcher relist (kube-runtime does, with backoff); its store is
//! swapped only when the new list is complete, so the running configuration stays meanwhile.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::de::DeserializeOwned;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::{translate, ObjectProblem, Options, Snapshot, Translated};
use crate::config::{ConfigError, Loaded};
use crate::reload;
use crate::state::State;

/// How long changes are gathered before one publish.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Publish once nothing changed for this long...
    pub quiet: Duration,
    /// ...or this long after the first unpublished change, whichever is first.
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(200),
            max: Duration::from_secs(1),
        }
    }
}

/// Where translations go.
pub trait Sink: Send + Sync + 'static {
    /// Publishes one translation; an error leaves the running configuration as it was.
    fn publish(&self, translated: &Translated) -> Result<(), ConfigError>;
}

/// rproxy's sink: compile beside the running configuration and publish, as a file reload does.
pub struct StateSink {
    pub state: Arc<State>,
}

impl Sink for StateSink {
    fn publish(&self, t: &Translated) -> Result<(), ConfigError> {
        let result = reload::publish(&self.state, &t.loaded, &t.certs);
        let why = format!("kubernetes: {} Ingresses", t.ingresses);
        reload::record(&why, result.as_ref().map(|_| ()));
        if result.is_ok() {
            self.state.source_ready();
        }
        result
    }
}

/// The kinds watched; publishing waits until each has been listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    IngressClass,
    Ingress,
    Service,
    EndpointSlice,
    Secret,
}

const KINDS: usize = 5;

/// What one watcher saw.
enum Change {
    /// A complete list is in (first start or a relist).
    Listed(Kind),
    /// An object was added, changed or deleted.
    Object,
    /// A watch failed; the watcher retries with backoff and relists.
    Failed(Kind, String),
    /// Part of a list under way.
    Nothing,
}

/// The reflector stores, read into a snapshot at each publish.
struct Stores {
    ingress_classes: Store<IngressClass>,
    ingresses: Store<Ingress>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            ingress_classes: self.ingress_classes.state(),
            ingresses: self.ingresses.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            secrets: self.secrets.state(),
        }
    }
}

/// Watches the cluster and publishes what it says.
pub struct Controller {
    pub client: Client,
    pub options: Options,
    pub base: Loaded,
    /// The file `base` was read from: SIGHUP reads it again (listeners and threads stay as
    /// they were at start) and publishes. `None`: the built-in base, SIGHUP only republishes.
    pub base_file: Option<PathBuf>,
    pub debounce: Debounce,
    pub sink: Arc<dyn Sink>,
}

impl Controller {
    /// Runs until `stop` completes (or every watch stream ends).
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let at_start = self.base.clone();
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let c = &self.client;
        let all = watcher::Config::default;
        let mut changes = SelectAll::new();
        let stores = Stores {
            ingress_classes: watch(Api::all(c.clone()), all(), Kind::IngressClass, &mut changes),
            ingresses: watch(Api::all(c.clone()), all(), Kind::Ingress, &mut changes),
            services: watch(Api::all(c.clone()), all(), Kind::Service, &mut changes),
            endpoint_slices: watch(
                Api::all(c.clone()),
                all(),
                Kind::EndpointSlice,
                &mut changes,
            ),
            secrets: watch(
                Api::all(c.clone()),
                all().fields("type=kubernetes.io/tls"),
                Kind::Secret,
                &mut changes,
            ),
        };
        let mut listed = BTreeSet::new();
        // The first unpublished change and the latest one.
        let mut pending: Option<(Instant, Instant)> = None;
        let mut reported: BTreeSet<ObjectProblem> = BTreeSet::new();
        tokio::pin!(stop);
        loop {
            let due = pending
                .filter(|_| listed.len() == KINDS)
                .map(|(first, last)| (last + self.debounce.quiet).min(first + self.debounce.max));
            let timer = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload_base(&at_start);
                    let now = Instant::now();
                    pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                }
                change = changes.next() => {
                    let Some(change) = change else { return };
                    let now = Instant::now();
                    match change {
                        Change::Listed(kind) => {
                            listed.insert(kind);
                        }
                        Change::Object => {}
                        Change::Failed(kind, why) => {
                            tracing::warn!(?kind, "kubernetes watch failed, relisting (the running configuration stays): {why}");
                            continue;
                        }
                        Change::Nothing => continue,
                    }
                    pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                }
                _ = timer => {
                    pending = None;
                    self.publish(&stores, &mut reported).await;
                }
            }
        }
    }

    /// SIGHUP: reads the base file again; a bad one is logged and counted, and the old stays.
    fn reload_base(&mut self, at_start: &Loaded) {
        let Some(path) = &self.base_file else {
            tracing::info!("SIGHUP: publishing again (the base is built in)");
            return;
        };
        let env = |name: &str| std::env::var(name).ok();
        match crate::config::load_file(path, &env) {
            Ok(mut loaded) => {
                reload::keep_fixed_settings(at_start, &mut loaded);
                self.base = loaded;
            }
            Err(e) => reload::record("SIGHUP, base file", Err(&e)),
        }
    }

    /// Translates what the stores hold and hands it to the sink, off the async threads.
    async fn publish(&self, stores: &Stores, reported: &mut BTreeSet<ObjectProblem>) {
        let snapshot = stores.snapshot();
        let translated = translate(&snapshot, &self.options, &self.base);
        // Each problem is logged once while it lasts, not at every publish.
        let now: BTreeSet<ObjectProblem> = translated.problems.iter().cloned().collect();
        for p in now.difference(reported) {
            tracing::warn!("{p}");
        }
        *reported = now;
        let sink = self.sink.clone();
        let handle = tokio::runtime::Handle::current();
        let _ = tokio::task::spawn_blocking(move || {
            let _runtime = handle.enter();
            sink.publish(&translated)
        })
        .await;
    }
}

/// Starts a reflector for one kind; its changes join `changes`.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    changes: &mut SelectAll<BoxStream<'static, Change>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .map(move |event| match event {
            Ok(Event::InitDone) => Change::Listed(kind),
            Ok(Event::Apply(_) | Event::Delete(_)) => Change::Object,
            Ok(Event::Init | Event::InitApply(_)) => Change::Nothing,
            Err(e) => Change::Failed(kind, e.to_string()),
        });
    changes.push(stream.boxed());
    reader
}

/// `rproxy --kubernetes` as one of the server's background services.
pub struct KubernetesService {
    pub kube: kube::Config,
    pub options: Options,
    pub base: Loaded,
    /// The file `base` came from (`-c`), read again on SIGHUP.
    pub base_file: Option<PathBuf>,
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for KubernetesService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match Client::try_from(self.kube.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("kubernetes client: {e}; no routes from the cluster");
                return;
            }
        };
        let controller = Controller {
            client,
            options: self.options.clone(),
            base: self.base.clone(),
            base_file: self.base_file.clone(),
            debounce: Debounce::default(),
            sink: Arc::new(StateSink {
                state: self.state.clone(),
            }),
        };
        controller
            .run(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    }
}
