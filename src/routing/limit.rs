//! Per-route rate limits per client IP (`rate_limit: 100/s`, `600/m`, optionally `burst N`),
//! counted in fixed windows with pingora-limits' estimator: above the limit the client gets 429
//! and a `Retry-After`.

use std::net::IpAddr;
use std::time::Duration;

use pingora_limits::rate::Rate;

/// A compiled `rate_limit`.
pub struct RateLimit {
    per_window: u64,
    burst: u64,
    window: Duration,
    rate: Rate,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{:?} burst {}",
            self.per_window, self.window, self.burst
        )
    }
}

impl RateLimit {
    /// Parses `100/s`, `600/m`, `10/s burst 20`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let bad = || format!("`{text}` is not a rate like 100/s, 600/m or `10/s burst 20`");
        let mut words = text.split_whitespace();
        let (n, unit) = words
            .next()
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let per_window: u64 = n.parse().map_err(|_| bad())?;
        let window = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(bad()),
        };
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => 0,
            (Some("burst"), Some(b), None) => b.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        if per_window == 0 {
            return Err(format!("`{text}`: the rate must be at least 1"));
        }
        Ok(RateLimit {
            per_window,
            burst,
            window,
            rate: Rate::new(window),
        })
    }

    /// Counts a request from `ip`; `Some(retry_after_seconds)` when it is over the limit.
    pub fn check(&self, ip: IpAddr) -> Option<u64> {
        let seen = self.rate.observe(&ip, 1).max(0) as u64;
        (seen > self.per_window + self.burst).then(|| self.window.as_secs().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip() {
        let limit = RateLimit::parse("3/m burst 1").unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..4 {
            assert_eq!(limit.check(a), None);
        }
        assert_eq!(limit.check(a), Some(60));
        assert_eq!(limit.check(b), None, "another client has its own budget");
        assert!(RateLimit::parse("fast").is_err());
        assert!(RateLimit::parse("0/s").is_err());
        assert!(RateLimit::parse("5/h").is_err());
    }
}
