//! The syntax of values in `proxy.yaml`: durations, sizes and status ranges written as text,
//! and the keys a user may write either short or long (a listener, a server, `compress`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::model::{ListenAddr, ServerEntry};

/// A route's `compress`: `false`, `true` or a list of encoding names (checked by `validate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compress {
    #[default]
    Off,
    On,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Compress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CompressVisitor;
        impl<'de> Visitor<'de> for CompressVisitor {
            type Value = Compress;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or encodings like [br, zstd, gzip]")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Compress, E> {
                Ok(if v { Compress::On } else { Compress::Off })
            }
            /// One encoding written without brackets: `compress: gzip`.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Compress, E> {
                Ok(Compress::List(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Compress, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Compress::List(names))
            }
        }
        d.deserialize_any(CompressVisitor)
    }
}

/// A duration written as `250ms`, `5s`, `2m`, `1h` or `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A byte size written as `512`, `64KiB`, `10MiB`, `1GiB`, `10M` or `10MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// An inclusive HTTP status range written as `200-399` or `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.0..=self.1).contains(&status)
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `30d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Parses `512`, `64KiB`, `10MiB`, `1GiB`, `10M`, `10MB`, `10k` (all binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some(StatusRange(lo, hi))
}

/// Deserializes a value that is written as a string or a number and parsed by `parse`.
fn from_scalar<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct ScalarVisitor<T> {
        what: &'static str,
        parse: fn(&str) -> Option<T>,
    }
    impl<T> Visitor<'_> for ScalarVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v)
                .ok_or_else(|| E::custom(format!("invalid value `{v}`: expected {}", self.what)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(ScalarVisitor { what, parse })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d, "a duration like 250ms, 5s, 2m, 1h", |s| {
            // A bare number is ambiguous; make the user say the unit.
            parse_duration(s).filter(|_| s.trim().contains(|c: char| c.is_alphabetic()))
        })
        .map(Dur)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d, "a size like 512, 64KiB, 10MiB, 1GiB", parse_size).map(Size)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d, "a status range like 200-399", parse_status_range)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AddrVisitor;
        impl<'de> Visitor<'de> for AddrVisitor {
            type Value = ListenAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`host:port` or `{ addr: host:port, proxy_protocol: true }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddr, E> {
                Ok(ListenAddr {
                    addr: v.to_string(),
                    proxy_protocol: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListenAddr, A::Error> {
                let (mut addr, mut proxy_protocol) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value::<String>()?),
                        "proxy_protocol" => proxy_protocol = Some(map.next_value::<bool>()?),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["addr", "proxy_protocol"],
                            ))
                        }
                    }
                }
                Ok(ListenAddr {
                    addr: addr.ok_or_else(|| de::Error::missing_field("addr"))?,
                    proxy_protocol: proxy_protocol.unwrap_or(false),
                })
            }
        }
        d.deserialize_any(AddrVisitor)
    }
}

impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`host:port` or `{ addr: host:port, weight: N }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerEntry, E> {
                Ok(ServerEntry {
                    addr: v.to_string(),
                    weight: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerEntry, A::Error> {
                let (mut addr, mut weight) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value::<String>()?),
                        "weight" => weight = Some(map.next_value::<u32>()?),
                        other => return Err(de::Error::unknown_field(other, &["addr", "weight"])),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                Ok(ServerEntry {
                    addr,
                    weight: weight.unwrap_or(1),
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1T"), None);
        assert_eq!(parse_status_range("200-399"), Some(StatusRange(200, 399)));
        assert_eq!(parse_status_range("399-200"), None);
    }
}
