//! Automatic certificates (ACME, e.g. Let's Encrypt): which names to order, when to order and
//! renew, backoff on failure, and one order per name across replicas sharing `<certs>/acme/`.
//! Issued files are picked up by the reload poller, which swaps them into the TLS resolver.

pub mod alpn;
mod order;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use instant_acme::Account;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::metrics;
use crate::state::State;
use store::{Lock, Store, Validity};

const TICK: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const CHECK_MAX: Duration = Duration::from_secs(3600);

/// How the CA validates a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

/// The compiled `tls.acme` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// `<certs>/acme`.
    pub dir: PathBuf,
    /// The directory URL.
    pub directory: String,
    pub ca: Option<PathBuf>,
    pub email: Option<String>,
    pub challenge: Challenge,
    pub domains: Vec<String>,
    pub renew_before: Option<Duration>,
}

/// The directory URL for `letsencrypt`, `letsencrypt-staging` or a URL.
pub fn directory_url(name: &str) -> String {
    match name {
        "letsencrypt" => instant_acme::LetsEncrypt::Production.url().to_string(),
        "letsencrypt-staging" => instant_acme::LetsEncrypt::Staging.url().to_string(),
        url => url.to_string(),
    }
}

/// The answer to an HTTP-01 validation request for `token`, if one is pending.
pub fn http01_answer(settings: &AcmeSettings, token: &str) -> Option<String> {
    Store::new(settings.dir.clone()).token(token)
}

/// When a certificate with this validity should be renewed.
fn renew_at(v: &Validity, renew_before: Option<Duration>) -> SystemTime {
    match renew_before {
        Some(before) => v.not_after.checked_sub(before).unwrap_or(v.not_before),
        None => {
            let lifetime = v.not_after.duration_since(v.not_before).unwrap_or_default();
            v.not_before + lifetime * 2 / 3
        }
    }
}

/// The next check: at most a tenth of the remaining lifetime away, at most hourly, with jitter.
fn check_after(v: &Validity, renew_before: Option<Duration>) -> Duration {
    let now = SystemTime::now();
    let remaining = v.not_after.duration_since(now).unwrap_or_default();
    let until_due = renew_at(v, renew_before)
        .duration_since(now)
        .unwrap_or_default();
    let wait = (remaining / 10)
        .min(CHECK_MAX)
        .min(until_due.max(Duration::from_millis(200)));
    let jitter = rand::random_range(0.9..1.0);
    wait.mul_f64(jitter).max(Duration::from_millis(200))
}

/// Order state of one name in this process.
struct Domain {
    next_check: Instant,
    backoff: Duration,
    lock: Option<Lock>,
}

impl Domain {
    fn new() -> Domain {
        Domain {
            next_check: Instant::now(),
            backoff: BACKOFF_MIN,
            lock: None,
        }
    }
}

/// The background service that keeps every ACME name's certificate current.
pub struct AcmeService {
    pub state: Arc<State>,
}

/// The account in use and the settings it was made for.
struct Session {
    settings: AcmeSettings,
    account: Account,
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut domains: HashMap<String, Domain> = HashMap::new();
        let mut session: Option<Session> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let Some(acme) = self.state.runtime().acme.clone() else {
                domains.clear();
                continue;
            };
            let store = Store::new(acme.dir.clone());
            if let Err(e) = store.prepare() {
                tracing::error!(dir = %acme.dir.display(), "cannot create the ACME directory: {e}");
                continue;
            }
            domains.retain(|name, _| acme.domains.contains(name));
            for name in &acme.domains {
                let domain = domains.entry(name.clone()).or_insert_with(Domain::new);
                tend(name, domain, &acme, &store, &mut session).await;
            }
        }
    }
}

/// Checks one name and orders its certificate when it is missing or due.
async fn tend(
    name: &str,
    domain: &mut Domain,
    acme: &AcmeSettings,
    store: &Store,
    session: &mut Option<Session>,
) {
    if let Some(lock) = &domain.lock {
        lock.refresh();
    }
    // A stored certificate that disappears is ordered again at once.
    let missing = !store.cert_path(name).is_file();
    if Instant::now() < domain.next_check && !(missing && domain.lock.is_none()) {
        return;
    }
    if let Some(v) = store
        .validity(name)
        .filter(|v| SystemTime::now() < renew_at(v, acme.renew_before))
    {
        domain.lock = None;
        domain.backoff = BACKOFF_MIN;
        domain.next_check = Instant::now() + check_after(&v, acme.renew_before);
        return;
    }
    if domain.lock.is_none() {
        domain.lock = store.try_lock(name);
        if domain.lock.is_none() {
            // Another replica is ordering; its files will show up here.
            domain.next_check = Instant::now() + Duration::from_secs(1);
            return;
        }
    }
    let started = Instant::now();
    match order_once(name, acme, store, session).await {
        Ok(()) => {
            metrics::acme_order(name, true);
            tracing::info!(
                domain = name,
                "certificate issued in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            domain.lock = None;
            domain.backoff = BACKOFF_MIN;
            domain.next_check = Instant::now();
        }
        Err(e) => {
            metrics::acme_order(name, false);
            tracing::warn!(
                domain = name,
                "certificate order failed, retrying in {:?}: {e}",
                domain.backoff
            );
            domain.next_check = Instant::now() + domain.backoff;
            domain.backoff = (domain.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

async fn order_once(
    name: &str,
    acme: &AcmeSettings,
    store: &Store,
    session: &mut Option<Session>,
) -> Result<(), order::OrderError> {
    if session
        .as_ref()
        .is_none_or(|s| s.settings.directory != acme.directory || s.settings.ca != acme.ca)
    {
        let account = order::account(acme, store).await?;
        *session = Some(Session {
            settings: acme.clone(),
            account,
        });
    }
    let Some(s) = session.as_ref() else {
        return Err(order::OrderError::Other("no account".into()));
    };
    match order::issue(&s.account, acme, store, name).await {
        Ok((chain, key)) => Ok(store.save_cert(name, &chain, &key)?),
        Err(e) => {
            // A failed request may mean a stale account session: make a new one next time.
            *session = None;
            Err(e)
        }
    }
}
