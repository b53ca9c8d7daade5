//! Certificates served by the https listener: `<certs>/*.crt|*.pem` each with a matching `*.key`,
//! indexed by the names in their SANs, plus a generated self-signed fallback. The resolver reads
//! the store through `ArcSwap`, so a new store takes effect at the next handshake. Certificates
//! held in memory (Kubernetes TLS Secrets: `InlineCert`) join the store the same way.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Problem;
use crate::metrics;

/// Certificates by name.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
    /// What each certificate file gave, so a reload can keep it when the file turns bad.
    files: HashMap<PathBuf, (Vec<String>, Arc<CertifiedKey>)>,
    /// Names covered by the static directory (ACME leaves them alone).
    static_names: Vec<String>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl CertStore {
    /// Loads every certificate pair in `static_dir` and `acme_dir` (if any) and, when
    /// `self_signed`, makes a fallback certificate for `fallback_names`. Static certificates win
    /// over ACME ones for the same name. With `previous` (a reload), a pair that fails to load
    /// keeps what it gave before, with a warning, instead of failing the whole store; a bad ACME
    /// pair (perhaps mid-write by another replica) is only ever a warning.
    pub fn load(
        static_dir: Option<&Path>,
        acme_dir: Option<&Path>,
        fallback_names: &[String],
        self_signed: bool,
        previous: Option<&CertStore>,
    ) -> Result<CertStore, Vec<Problem>> {
        let mut store = CertStore::default();
        let mut problems = Vec::new();
        if let Some(dir) = acme_dir.filter(|d| d.is_dir()) {
            for pair in find_pairs(dir, &mut Vec::new()) {
                if let Err(p) = store.load_file(pair, previous) {
                    tracing::warn!("{p}");
                }
            }
        }
        for pair in static_dir
            .map(|d| find_pairs(d, &mut problems))
            .unwrap_or_default()
        {
            match store.load_file(pair, previous) {
                Ok(names) => store.static_names.extend(names),
                Err(p) => problems.push(p),
            }
        }
        if self_signed {
            match self_signed_cert(fallback_names) {
                Ok(key) => store.fallback = Some(key),
                Err(e) => problems.push(Problem::at(
                    "tls.self_signed",
                    format!("cannot make a self-signed certificate: {e}"),
                )),
            }
        }
        if problems.is_empty() {
            Ok(store)
        } else {
            Err(problems)
        }
    }

    /// Adds one pair; returns the names it covers.
    fn load_file(
        &mut self,
        (cert, key): (PathBuf, PathBuf),
        previous: Option<&CertStore>,
    ) -> Result<Vec<String>, Problem> {
        let loaded = load_pair(&cert, &key).map(|(names, key, not_after)| {
            for name in &names {
                metrics::set_certificate_expiry(name, not_after);
            }
            (names, key)
        });
        let pair = match (loaded, previous.and_then(|p| p.files.get(&cert))) {
            (Ok(pair), _) => pair,
            (Err(why), Some(last_good)) => {
                tracing::warn!(file = %cert.display(), "{why}; keeping the last good certificate");
                last_good.clone()
            }
            (Err(why), None) => return Err(Problem::at(cert.display().to_string(), why)),
        };
        let names = pair.0.clone();
        self.add_file(cert, pair);
        Ok(names)
    }

    /// Adds certificates held in memory (TLS Secrets); they count as static (ACME leaves their
    /// names alone) and, added last, win over files for the same name.
    pub fn add_inline(&mut self, certs: &[InlineCert]) {
        for cert in certs {
            for name in &cert.names {
                metrics::set_certificate_expiry(name, cert.not_after);
                self.insert(name, cert.key.clone());
            }
            self.static_names.extend(cert.names.iter().cloned());
        }
    }

    /// Does a certificate from the static directory cover `name`?
    pub fn covers_static(&self, name: &str) -> bool {
        names_cover(&self.static_names, name)
    }

    fn add_file(&mut self, file: PathBuf, pair: (Vec<String>, Arc<CertifiedKey>)) {
        for name in &pair.0 {
            self.insert(name, pair.1.clone());
        }
        self.files.insert(file, pair);
    }

    fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), key),
            None => self.exact.insert(name, key),
        };
    }

    /// Does a loaded (not self-signed) certificate cover `name`?
    pub fn covers(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.exact.get(&name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, suffix)| self.wildcard.get(suffix))
        })
    }

    /// The certificate for an SNI name, else the fallback.
    pub fn get(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|n| self.lookup(n))
            .or(self.fallback.as_ref())
            .cloned()
    }
}

/// rustls' view of the store; swap the store to change certificates without a restart.
#[derive(Debug)]
pub struct CertResolver {
    store: ArcSwap<CertStore>,
}

impl CertResolver {
    pub fn new(store: CertStore) -> CertResolver {
        CertResolver {
            store: ArcSwap::from_pointee(store),
        }
    }

    pub fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }

    pub fn store(&self) -> Arc<CertStore> {
        self.store.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.store.load().get(hello.server_name());
        if cert.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for this name");
        }
        cert
    }
}

/// A certificate chain and its key held in memory (a Kubernetes `kubernetes.io/tls` Secret),
/// parsed and checked once.
#[derive(Clone)]
pub struct InlineCert {
    /// Where it came from, for logs (`namespace/name`).
    pub source: String,
    /// The DNS and IP names its leaf covers (SANs, else the CN).
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    /// Expiry, Unix seconds.
    pub not_after: f64,
}

impl fmt::Debug for InlineCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineCert")
            .field("source", &self.source)
            .field("names", &self.names)
            .finish()
    }
}

impl InlineCert {
    /// Parses a PEM chain and its PEM key; says what is wrong in words otherwise.
    pub fn parse(source: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<InlineCert, String> {
        let (names, key, not_after) = parse_pair(cert_pem, key_pem, "tls.key")?;
        Ok(InlineCert {
            source: source.to_string(),
            names,
            key,
            not_after,
        })
    }

    /// Does this certificate cover `host` (exactly or by a `*.` name)?
    pub fn covers(&self, host: &str) -> bool {
        names_cover(&self.names, host)
    }
}

/// Does one of a certificate's `names` cover `host`, exactly or as `*.` its parent?
fn names_cover(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let parent = host.split_once('.').map(|(_, s)| format!("*.{s}"));
    names.iter().any(|n| {
        n.eq_ignore_ascii_case(&host)
            || parent.as_deref().is_some_and(|p| n.eq_ignore_ascii_case(p))
    })
}

/// `(cert file, key file)` pairs: `name.crt` or `name.pem` with `name.key`.
fn find_pairs(dir: &Path, problems: &mut Vec<Problem>) -> Vec<(PathBuf, PathBuf)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::at(
                dir.display().to_string(),
                format!("cannot read the certificate directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut pairs: Vec<(PathBuf, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("crt" | "pem"))
        })
        .filter_map(|cert| {
            let key = cert.with_extension("key");
            if key.is_file() {
                Some((cert, key))
            } else {
                tracing::debug!(file = %cert.display(), "no matching .key file; not served");
                None
            }
        })
        .collect();
    pairs.sort();
    pairs
}

/// Reads one pair: the names its leaf covers, the signing key, and its expiry (Unix seconds).
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<String>, Arc<CertifiedKey>, f64), String> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| format!("cannot read: {e}"))?;
    let key_pem =
        std::fs::read(key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    parse_pair(&cert_pem, &key_pem, &key_path.display().to_string())
}

/// Parses a PEM chain and key; `key_name` names the key in messages.
fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    key_name: &str,
) -> Result<(Vec<String>, Arc<CertifiedKey>, f64), String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the file")?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("{key_name}: not a PEM private key: {e}"))?
        .ok_or_else(|| format!("{key_name}: no private key in the file"))?;
    let signing = any_supported_type(&key)
        .map_err(|e| format!("{key_name}: unsupported private key: {e}"))?;
    let (names, not_after) = leaf_names(leaf)?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key in {key_name} does not belong to this certificate: {e}"))?;
    Ok((names, Arc::new(certified), not_after))
}

/// DNS and IP names of a certificate (SANs, else the CN) and its expiry.
fn leaf_names(der: &CertificateDer<'_>) -> Result<(Vec<String>, f64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_string),
        );
    }
    if names.is_empty() {
        return Err("the certificate names no host (no SAN and no CN)".into());
    }
    Ok((names, cert.validity().not_after.timestamp() as f64))
}

/// A self-signed certificate for `names` (plus `localhost`).
fn self_signed_cert(names: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let mut names: Vec<String> = names.to_vec();
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let signing = any_supported_type(&key).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signing,
    )))
}
