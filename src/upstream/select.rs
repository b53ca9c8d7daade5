//! Server selection per `balance` algorithm. Every algorithm only picks servers the caller
//! calls eligible (healthy, not already tried), so health gating is never bypassed.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Backend, SelectKey};
use crate::config::model::Balance;

/// The selection state of one pool.
#[derive(Debug)]
pub struct Selector {
    balance: Balance,
    next: AtomicUsize,
    /// Smooth weighted round-robin order of backend indexes (weighted only).
    schedule: Vec<usize>,
}

impl Selector {
    pub fn new(balance: Balance, weights: &[u32]) -> Selector {
        // Round robin honours weights as nginx's does; `weighted` is the same algorithm.
        let weighted = matches!(
            balance,
            Balance::Weighted | Balance::RoundRobin | Balance::Cookie
        ) && weights.iter().any(|&w| w != 1);
        let schedule = if weighted {
            smooth_schedule(weights)
        } else {
            Vec::new()
        };
        Selector {
            balance,
            next: AtomicUsize::new(0),
            schedule,
        }
    }

    /// Picks an eligible backend index, or `None` when none is eligible.
    pub fn pick(
        &self,
        backends: &[Arc<Backend>],
        key: &SelectKey,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        match self.balance {
            // Sticky sessions pick by round robin when the cookie names no eligible server.
            Balance::RoundRobin | Balance::Weighted | Balance::Cookie
                if self.schedule.is_empty() =>
            {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
            }
            Balance::RoundRobin | Balance::Weighted | Balance::Cookie => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len)
                    .map(|k| self.schedule[(start + k) % len])
                    .find(|&i| eligible(i))
            }
            Balance::LeastConn => {
                // Fewest in-flight per unit of weight; ties rotate so idle servers share work.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| eligible(i))
                    .min_by_key(|&i| {
                        (backends[i].active() as u64 * 1024) / u64::from(backends[i].weight.max(1))
                    })
            }
            Balance::IpHash => {
                let (v4, v6);
                let octets: &[u8] = match key.client_ip {
                    Some(std::net::IpAddr::V4(ip)) => {
                        v4 = ip.octets();
                        &v4
                    }
                    Some(std::net::IpAddr::V6(ip)) => {
                        v6 = ip.octets();
                        &v6
                    }
                    None => &[],
                };
                rendezvous(backends, octets, eligible)
            }
            Balance::ConsistentHash => rendezvous(backends, key.uri.as_bytes(), eligible),
            Balance::Random => {
                let count = (0..n).filter(|&i| eligible(i)).count();
                if count == 0 {
                    return None;
                }
                let pick = rand::random_range(0..count);
                (0..n).filter(|&i| eligible(i)).nth(pick)
            }
        }
    }
}

/// Highest-random-weight hashing: a key keeps its server while that server stays eligible, and
/// only the keys of a server that leaves move.
fn rendezvous(
    backends: &[Arc<Backend>],
    key: &[u8],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..backends.len())
        .filter(|&i| eligible(i))
        .max_by_key(|&i| {
            let mut h = fnv::FnvHasher::default();
            key.hash(&mut h);
            backends[i].label.hash(&mut h);
            h.finish()
        })
}

/// Nginx's smooth weighted round-robin, unrolled into one cycle of backend indexes.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w.max(1))).sum();
    let cycle = total.min(10_000) as usize;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(cycle);
    for _ in 0..cycle {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from((*w).max(1));
        }
        let Some(best) = (0..weights.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| {
                Arc::new(Backend::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    format!("s{i}"),
                    1,
                    true,
                ))
            })
            .collect()
    }

    #[test]
    fn smooth_weights_interleave() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(
            smooth_schedule(&[1, 3]).iter().filter(|&&i| i == 1).count(),
            3
        );
    }

    #[test]
    fn round_robin_skips_ineligible() {
        let b = backends(3);
        let s = Selector::new(Balance::RoundRobin, &[1, 1, 1]);
        let picks: Vec<_> = (0..4)
            .map(|_| s.pick(&b, &SelectKey::default(), |i| i != 1).unwrap())
            .collect();
        assert!(!picks.contains(&1));
        assert!(picks.contains(&0) && picks.contains(&2));
        assert_eq!(s.pick(&b, &SelectKey::default(), |_| false), None);
    }

    #[test]
    fn least_conn_prefers_idle() {
        let b = backends(2);
        let _busy = b[0].begin();
        let s = Selector::new(Balance::LeastConn, &[1, 1]);
        for _ in 0..4 {
            assert_eq!(s.pick(&b, &SelectKey::default(), |_| true), Some(1));
        }
    }

    #[test]
    fn consistent_hash_is_stable() {
        let b = backends(4);
        let s = Selector::new(Balance::ConsistentHash, &[1; 4]);
        let key = SelectKey {
            uri: "/a",
            ..Default::default()
        };
        let first = s.pick(&b, &key, |_| true).unwrap();
        assert_eq!(s.pick(&b, &key, |_| true), Some(first));
        // Removing another server does not move the key.
        let other = (first + 1) % 4;
        assert_eq!(s.pick(&b, &key, |i| i != other), Some(first));
    }
}
