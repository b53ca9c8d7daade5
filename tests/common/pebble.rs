//! A real ACME server on loopback for the certificate tests: Debian's `pebble` with
//! `pebble-challtestsrv` as its DNS (every name resolves to 127.0.0.1), on free ports. Pebble's
//! own HTTPS certificate is a leaf signed by a small CA made here with rcgen; rproxy trusts that
//! CA through `tls.acme.ca`. Both processes are killed on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use tempfile::TempDir;

use super::{client_builder, free_port, POLL};

/// How long [`PebbleBuilder::start`] waits for Pebble and challtestsrv to answer.
pub const PEBBLE_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Pebble's settings and files, before it runs. Ports are picked at [`PebbleBuilder::new`], so
/// the directory URL is known (and can go into a `proxy.yaml`) before Pebble starts.
pub struct PebbleBuilder {
    dir: TempDir,
    /// The ACME port (`/dir`).
    pub acme: u16,
    /// Pebble's management port (`/roots/0`).
    pub mgmt: u16,
    /// challtestsrv's DNS port (UDP), Pebble's resolver.
    pub dns: u16,
    /// challtestsrv's management port (HTTP).
    pub challtest: u16,
    http_port: u16,
    tls_port: u16,
    validity: Option<u64>,
    ca_pem: String,
}

impl Default for PebbleBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PebbleBuilder {
    /// Makes the CA and Pebble's leaf, picks the ports. HTTP-01 and TLS-ALPN-01 validation
    /// go to ports where nothing listens until [`PebbleBuilder::http_port`] /
    /// [`PebbleBuilder::tls_port`] say otherwise.
    pub fn new() -> PebbleBuilder {
        let dir = tempfile::Builder::new()
            .prefix("rproxy-pebble")
            .tempdir()
            .expect("tempdir");
        let (ca_pem, leaf_pem, leaf_key_pem) = pebble_tls();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write ca.pem");
        std::fs::write(dir.path().join("cert.pem"), leaf_pem).expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), leaf_key_pem).expect("write key.pem");
        PebbleBuilder {
            dir,
            acme: free_port(),
            mgmt: free_port(),
            dns: free_port(),
            challtest: free_port(),
            http_port: free_port(),
            tls_port: free_port(),
            validity: None,
            ca_pem,
        }
    }

    /// The port Pebble connects to for HTTP-01 validation (an rproxy http listener).
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = port;
        self
    }

    /// The port Pebble connects to for TLS-ALPN-01 validation (an rproxy https listener).
    pub fn tls_port(mut self, port: u16) -> Self {
        self.tls_port = port;
        self
    }

    /// Lifetime of issued certificates (Pebble's `certificateValidityPeriod`).
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = Some(validity.as_secs());
        self
    }

    /// The ACME directory URL (`tls.acme.directory`).
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme)
    }

    /// The CA that signed Pebble's HTTPS certificate (`tls.acme.ca`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_path(&self, stem: &str) -> PathBuf {
        self.dir.path().join(format!("{stem}.log"))
    }

    /// Starts challtestsrv and Pebble and waits until both answer.
    pub async fn start(self) -> Pebble {
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.acme),
                "managementListenAddress": format!("127.0.0.1:{}", self.mgmt),
                "certificate": self.dir.path().join("cert.pem"),
                "privateKey": self.dir.path().join("key.pem"),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(secs) = self.validity {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        let config_path = self.dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble-config.json");

        let challtest = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .arg("-dns01")
                .arg(format!("127.0.0.1:{}", self.dns))
                .arg("-management")
                .arg(format!("127.0.0.1:{}", self.challtest)),
            &self.log_path("challtestsrv"),
        );
        let pebble = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{}", self.dns))
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            &self.log_path("pebble"),
        );
        let mut running = Pebble {
            setup: self,
            pebble: Some(pebble),
            challtest: Some(challtest),
        };
        running.wait_ready().await;
        running
    }

    /// A reqwest client that trusts only the CA behind Pebble's HTTPS certificate.
    fn client(&self) -> reqwest::Client {
        client_builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA certificate"),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client")
    }
}

/// Runs `cmd` with stdout and stderr going to `log`; panics when the binary is missing.
fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {:?} ({e}); install Debian's `pebble` package",
                cmd.get_program()
            )
        })
}

/// A CA and a leaf for `localhost` / `127.0.0.1` signed by it (rustls refuses a CA certificate
/// used as a server's own): `(ca_pem, leaf_pem, leaf_key_pem)`.
fn pebble_tls() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "rproxy test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");

    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf.signed_by(&leaf_key, &ca).expect("leaf");
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// A running Pebble + challtestsrv; both are killed when dropped (their logs are printed when
/// the test panicked).
pub struct Pebble {
    setup: PebbleBuilder,
    pebble: Option<Child>,
    challtest: Option<Child>,
}

impl Pebble {
    /// A Pebble that validates HTTP-01 against `http_port`, TLS-ALPN-01 against `tls_port`.
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        PebbleBuilder::new()
            .http_port(http_port)
            .tls_port(tls_port)
            .start()
            .await
    }

    /// The ACME directory URL (`tls.acme.directory`).
    pub fn directory(&self) -> String {
        self.setup.directory()
    }

    /// The CA that signed Pebble's HTTPS certificate (`tls.acme.ca`).
    pub fn ca_path(&self) -> PathBuf {
        self.setup.ca_path()
    }

    /// Pebble's output so far (without its per-request `calling handler` lines), then
    /// challtestsrv's.
    pub fn log(&self) -> String {
        let read = |stem: &str| {
            std::fs::read_to_string(self.setup.log_path(stem))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.ends_with("-> calling handler()"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- pebble ---\n{}\n--- pebble-challtestsrv ---\n{}",
            read("pebble"),
            read("challtestsrv")
        )
    }

    fn pebble_log(&self) -> String {
        std::fs::read_to_string(self.setup.log_path("pebble")).unwrap_or_default()
    }

    /// Orders created so far (Pebble logs `Added order ...` for each).
    pub fn orders(&self) -> usize {
        self.pebble_log().matches("Added order").count()
    }

    /// Certificates issued so far (Pebble logs `Issued certificate serial ...` for each).
    pub fn issued(&self) -> usize {
        self.pebble_log()
            .matches("Issued certificate serial")
            .count()
    }

    /// The root that issued chains lead to (`/roots/0` on the management port; a new one at
    /// every Pebble start).
    pub async fn root(&self) -> CertificateDer<'static> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.setup.mgmt);
        let pem = self
            .setup
            .client()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log()))
            .bytes()
            .await
            .expect("root body");
        let root = rustls_pemfile::certs(&mut pem.as_ref())
            .next()
            .unwrap_or_else(|| panic!("no certificate at {url}"))
            .expect("root PEM");
        root
    }

    /// `Some(what)` when Pebble or challtestsrv has exited.
    fn exited(&mut self) -> Option<String> {
        for (name, child) in [
            ("pebble", &mut self.pebble),
            ("pebble-challtestsrv", &mut self.challtest),
        ] {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                return Some(format!("{name} exited early with {status}"));
            }
        }
        None
    }

    /// Polls Pebble's `/dir` (over HTTPS, trusting the CA), its `/roots/0` and challtestsrv's
    /// management port until all answer; panics when a process exits or time runs out.
    async fn wait_ready(&mut self) {
        let client = self.setup.client();
        let dir_url = self.setup.directory();
        let root_url = format!("https://127.0.0.1:{}/roots/0", self.setup.mgmt);
        let challtest = SocketAddr::from(([127, 0, 0, 1], self.setup.challtest));
        let deadline = Instant::now() + PEBBLE_START_TIMEOUT;
        loop {
            if let Some(exited) = self.exited() {
                panic!("{exited}\n{}", self.log());
            }
            let ok = |r: Result<reqwest::Response, reqwest::Error>| {
                r.is_ok_and(|r| r.status().is_success())
            };
            if TcpStream::connect_timeout(&challtest, Duration::from_millis(200)).is_ok()
                && ok(client.get(&dir_url).send().await)
                && ok(client.get(&root_url).send().await)
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "pebble not ready after {PEBBLE_START_TIMEOUT:?}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [self.pebble.take(), self.challtest.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}
