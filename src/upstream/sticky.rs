//! Sticky sessions (`balance: cookie`, or a pool's `sticky:` block): a cookie names the server
//! that answered a client, and the client's next requests go back to it while it is healthy.
//! The cookie holds an HMAC of the server's identity under the pool's key, not its address:
//! a client can neither read the address nor name a server it was not sent to. When the named
//! server is unhealthy or gone, the pool's own algorithm picks, and the cookie is set anew.

use std::time::Duration;

use ring::hmac;

use super::Backend;

/// Bytes of the HMAC a cookie carries (as hex: twice as many characters).
const TOKEN_BYTES: usize = 16;

/// The key sticky cookies are signed with when a pool gives no `secret`: random, made at start
/// and kept across reloads (a restart moves sessions; replicas need a shared `secret`).
#[derive(Clone)]
pub struct DefaultKey([u8; 32]);

impl DefaultKey {
    pub fn random() -> DefaultKey {
        DefaultKey(rand::random())
    }
}

impl std::fmt::Debug for DefaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("DefaultKey(..)")
    }
}

/// A server's cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The sticky-session settings of one pool.
pub struct Sticky {
    pub cookie: String,
    ttl: Option<Duration>,
    key: hmac::Key,
    pool: String,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sticky {
    /// `secret` when the pool gives one, else `default`.
    pub fn new(
        pool: &str,
        cookie: String,
        ttl: Option<Duration>,
        secret: Option<&str>,
        default: &DefaultKey,
    ) -> Sticky {
        let bytes = secret.map_or(&default.0[..], str::as_bytes);
        Sticky {
            cookie,
            ttl,
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            pool: pool.to_string(),
        }
    }

    /// The cookie value that names `server`.
    pub fn token(&self, server: &Backend) -> Token {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(self.pool.as_bytes());
        ctx.update(&[0]);
        ctx.update(server.label.as_bytes());
        let tag = ctx.sign();
        let hex: String = tag.as_ref()[..TOKEN_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Token(hex)
    }

    /// The `Set-Cookie` value that sends a client back to the server of `token`.
    pub fn set_cookie(&self, token: &Token, https: bool) -> String {
        let mut v = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie, token.0
        );
        if let Some(ttl) = self.ttl {
            v.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        if https {
            v.push_str("; Secure");
        }
        v
    }
}

/// The default cookie name of pool `pool`: `rproxy_<pool>`, with characters a cookie name may
/// not hold replaced by `_`.
pub fn default_cookie(pool: &str) -> String {
    let name: String = pool
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    format!("rproxy_{name}")
}

/// Is `name` a valid cookie name (an RFC 9110 token)?
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(label: &str) -> Backend {
        Backend::new("127.0.0.1:1".parse().unwrap(), label.into(), 1, true)
    }

    #[test]
    fn tokens_name_servers_under_the_key() {
        let key = DefaultKey::random();
        let s = Sticky::new("app", "c".into(), None, None, &key);
        let (a, b) = (server("10.0.0.1:80"), server("10.0.0.2:80"));
        assert_eq!(s.token(&a), s.token(&a));
        assert_ne!(s.token(&a), s.token(&b));
        assert_eq!(s.token(&a).as_bytes().len(), 2 * TOKEN_BYTES);
        assert!(!String::from_utf8_lossy(s.token(&a).as_bytes()).contains("10.0.0.1"));
        // Another key, secret or pool: other tokens.
        let other = Sticky::new("app", "c".into(), None, None, &DefaultKey::random());
        assert_ne!(s.token(&a), other.token(&a));
        let secret = Sticky::new("app", "c".into(), None, Some("s3cret"), &key);
        let same_secret = Sticky::new(
            "app",
            "c".into(),
            None,
            Some("s3cret"),
            &DefaultKey::random(),
        );
        assert_eq!(secret.token(&a), same_secret.token(&a));
        let pool = Sticky::new("api", "c".into(), None, Some("s3cret"), &key);
        assert_ne!(secret.token(&a), pool.token(&a));
    }

    #[test]
    fn the_cookie() {
        let key = DefaultKey::random();
        let s = Sticky::new(
            "app",
            "sid".into(),
            Some(Duration::from_secs(3600)),
            None,
            &key,
        );
        let t = s.token(&server("x:1"));
        let v = s.set_cookie(&t, true);
        assert!(
            v.starts_with(&format!("sid={}; Path=/; HttpOnly; SameSite=Lax", t.0)),
            "{v}"
        );
        assert!(v.ends_with("; Max-Age=3600; Secure"), "{v}");
        let session = Sticky::new("app", "sid".into(), None, None, &key);
        assert!(!session.set_cookie(&t, false).contains("Max-Age"));
        assert_eq!(default_cookie("my app/v2"), "rproxy_my_app_v2");
        assert!(is_cookie_name("rproxy_app") && !is_cookie_name("a b") && !is_cookie_name(""));
    }
}
