//! ACME state on disk under `<certs>/acme/`, shared by replicas: the account, issued chains and
//! keys (0600), challenge answers (HTTP-01 tokens, TLS-ALPN-01 certificates) and per-domain
//! order locks that expire when their holder stops refreshing them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

/// A lock older than this is taken to belong to a replica that died.
pub const LOCK_STALE: Duration = Duration::from_secs(60);

/// The `<certs>/acme` directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

/// Validity of a stored certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// Creates the directory tree.
    pub fn prepare(&self) -> std::io::Result<()> {
        fs::create_dir_all(self.challenges())?;
        fs::create_dir_all(self.dir.join("locks"))
    }

    pub fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    pub fn cert_path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.crt"))
    }

    pub fn key_path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.key"))
    }

    pub fn challenges(&self) -> PathBuf {
        self.dir.join("challenges")
    }

    /// The stored certificate's validity, or `None` if it is missing or unreadable.
    pub fn validity(&self, domain: &str) -> Option<Validity> {
        let pem = fs::read(self.cert_path(domain)).ok()?;
        fs::metadata(self.key_path(domain)).ok()?;
        let leaf: CertificateDer<'static> =
            rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
        let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        Some(Validity {
            not_before: at(cert.validity().not_before.timestamp()),
            not_after: at(cert.validity().not_after.timestamp()),
        })
    }

    /// Writes an issued chain and key; the key last, so a reader that sees both sees a pair.
    pub fn save_cert(&self, domain: &str, chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
        write_private(&self.cert_path(domain), chain_pem.as_bytes(), 0o644)?;
        write_private(&self.key_path(domain), key_pem.as_bytes(), 0o600)
    }

    /// HTTP-01: the key authorization for `token`, readable by every replica.
    pub fn put_token(&self, token: &str, key_authorization: &str) -> std::io::Result<()> {
        write_private(
            &self.challenges().join(token),
            key_authorization.as_bytes(),
            0o644,
        )
    }

    pub fn token(&self, token: &str) -> Option<String> {
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        fs::read_to_string(self.challenges().join(token)).ok()
    }

    pub fn remove_token(&self, token: &str) {
        let _ = fs::remove_file(self.challenges().join(token));
    }

    /// TLS-ALPN-01: the challenge certificate and key for `domain`, as one PEM file.
    pub fn alpn_path(&self, domain: &str) -> PathBuf {
        self.challenges().join(format!("{domain}.alpn.pem"))
    }

    /// Takes the order lock of `domain`, unless a live replica holds it.
    pub fn try_lock(&self, domain: &str) -> Option<Lock> {
        let path = self.dir.join("locks").join(format!("{domain}.lock"));
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Some(Lock { path });
                }
                Err(_) if is_stale(&path) => {
                    tracing::warn!(lock = %path.display(), "removing a stale ACME lock");
                    let _ = fs::remove_file(&path);
                }
                Err(_) => return None,
            }
        }
        None
    }
}

fn is_stale(path: &Path) -> bool {
    let modified = fs::metadata(path).and_then(|m| m.modified());
    modified.is_ok_and(|m| m.elapsed().unwrap_or_default() > LOCK_STALE)
}

/// Writes through a temporary file and a rename, so readers never see half a file.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// An order lock held by this process; removed when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Marks the lock as alive.
    pub fn refresh(&self) {
        let stale_soon = fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map(|m| m.elapsed().unwrap_or_default() > LOCK_STALE / 6)
            .unwrap_or(true);
        if stale_soon {
            let _ = write_private(
                &self.path,
                format!("{}\n", std::process::id()).as_bytes(),
                0o644,
            );
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
