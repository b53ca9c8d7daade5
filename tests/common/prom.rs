//! Prometheus text format for tests: a strict line parser (`# HELP`, `# TYPE`, samples with
//! labels and a float value) and lookups of one series' value in a proxy's `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{wait_until, Proxy};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(key, value)` of `want` is among this sample's labels.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// A parsed `/metrics` answer.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Family name -> help text.
    pub help: BTreeMap<String, String>,
    /// Family name -> `counter`, `gauge`, `histogram`, ...
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named exactly `name` whose labels include `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has(labels))
    }

    /// The value of the one sample named `name` with (at least) `labels`; `None` when there is
    /// none; panics when several match (the test asked an ambiguous question).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.find(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples: {found:?}",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// Whether a `# TYPE` line or any sample names the family `name`.
    pub fn mentions(&self, name: &str) -> bool {
        self.types.contains_key(name) || self.samples.iter().any(|s| family_of(&s.name) == name)
    }
}

/// The family a sample name belongs to (`x_bucket`, `x_sum`, `x_count` -> `x`).
pub fn family_of(sample: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            return base;
        }
    }
    sample
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// Parses `{k="v",...}` at the start of `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with `{`")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without `=`")?;
        let key = rest[..eq].trim();
        if !valid_name(key) {
            return Err(format!("bad label name `{key}`"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape in label value: {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label `{key}` given twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Parses the Prometheus text format strictly: every line is blank, a comment (`# HELP name
/// text`, `# TYPE name type` with a known type, or any other `#` line), or a sample
/// `name[{labels}] value [timestamp]` whose value is a float. A sample's family must have had
/// its `# TYPE` line first when it has one at all.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: `{line}`", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words
                        .next()
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    if !valid_name(name) {
                        return Err(at(format!("bad metric name `{name}`")));
                    }
                    out.help
                        .insert(name.to_string(), words.next().unwrap_or("").to_string());
                }
                Some("TYPE") => {
                    let name = words
                        .next()
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = words.next().unwrap_or("").trim();
                    if !valid_name(name) {
                        return Err(at(format!("bad metric name `{name}`")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type `{kind}`")));
                    }
                    if out.samples.iter().any(|s| family_of(&s.name) == name) {
                        return Err(at(format!("TYPE for `{name}` after its samples")));
                    }
                    if out
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(at(format!("second TYPE line for `{name}`")));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let raw = fields
            .next()
            .ok_or_else(|| at("sample without a value".into()))?;
        let value = parse_value(raw).ok_or_else(|| at(format!("value `{raw}` is not a float")))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("timestamp `{ts}` is not an integer")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text after the sample".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

impl Proxy {
    /// `GET /metrics`, parsed (panics with the text when it does not parse).
    pub async fn metrics_parsed(&self) -> Exposition {
        let text = self.metrics().await;
        parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
    }

    /// The value of one series (see [`Exposition::value`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics_parsed().await.value(name, labels)
    }

    /// `rproxy_config_reloads_total{result=<result>}`, 0 while the series does not exist.
    pub async fn reloads(&self, result: &str) -> f64 {
        self.metric("rproxy_config_reloads_total", &[("result", result)])
            .await
            .unwrap_or(0.0)
    }

    /// Waits (bounded) until `rproxy_config_reloads_total{result=<result>}` is above `before`.
    pub async fn wait_reloads_above(&self, result: &str, before: f64, timeout: Duration) -> bool {
        wait_until(timeout, || async { self.reloads(result).await > before }).await
    }
}
