//! Reading `proxy.yaml`: `${VAR}` / `${VAR:-default}` substitution, then a YAML parse that
//! reports every problem at once: each section, pool and route is deserialized on its own, a
//! key that does not parse is reported and dropped so the rest of its node still parses, and
//! the semantic checks run on whatever parsed. Every problem gets its `file:line:col`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::model::{Config, RouteConfig, UpstreamConfig};
use super::spans::{child_index, child_key};
use super::{did_you_mean, validate, ConfigError, Loaded, Place, Pos, Problem, Source, Spans};

/// Reads, substitutes, parses and (when something did not parse) checks a configuration file:
/// the error lists the parse problems and the semantic problems of the parts that parsed.
/// A file that parses is checked by `compile`, which every caller runs next.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::from(vec![Problem::at(
            &name,
            format!("cannot read the file: {e}"),
        )])
    })?;
    let parsed = parse(&text, &name, env)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let loaded = Loaded {
        config: parsed.config,
        path: path.to_path_buf(),
        dir,
        source: parsed.source,
    };
    if parsed.problems.is_empty() {
        return Ok(loaded);
    }
    let mut problems = parsed.problems;
    problems.extend(validate(&loaded));
    Err(loaded.source.locate(problems).into())
}

/// Substitutes and parses configuration text; `name` is used in error locations.
pub fn load_str(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let parsed = parse(text, name, env)?;
    if parsed.problems.is_empty() {
        Ok(parsed.config)
    } else {
        Err(parsed.source.locate(parsed.problems).into())
    }
}

/// Whatever parsed, where it was written, and what did not parse.
struct Parsed {
    config: Config,
    source: Source,
    problems: Vec<Problem>,
}

/// An unset variable or broken YAML stops here (`Err`); anything else is collected.
fn parse(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let text = substitute_env(text, name, env)?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| vec![yaml_problem(name, &e)])?;
    let mut source = Source {
        file: name.to_string(),
        spans: Spans::of(&text),
        gaps: Default::default(),
    };
    let mut reader = Reader {
        source: &mut source,
        problems: Vec::new(),
    };
    let config = reader.config(doc);
    let problems = reader.problems;
    Ok(Parsed {
        config,
        source,
        problems,
    })
}

/// Replaces `${VAR}` and `${VAR:-default}`; an unset variable without a default is an error.
pub fn substitute_env(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let expr = &after[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            match (env(var), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    let col = line.len() - rest.len() + start + 1;
                    problems.push(Problem::in_text(
                        name,
                        Pos {
                            line: lineno + 1,
                            col,
                        },
                        format!("environment variable `{var}` is not set (write ${{{var}:-default}} to give a default)"),
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.into())
    }
}

const TOP_KEYS: &[&str] = &["server", "listen", "tls", "upstreams", "routes"];

/// Turns the document into a `Config` node by node, noting each problem and each gap.
struct Reader<'a> {
    source: &'a mut Source,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn config(&mut self, doc: Value) -> Config {
        let mut config = Config::default();
        let map = match doc {
            Value::Null => return config,
            Value::Mapping(map) => map,
            _ => {
                self.problems.push(Problem::at(
                    "(top level)",
                    "expected a mapping of sections (server, listen, tls, upstreams, routes)",
                ));
                self.source.gaps.add("");
                return config;
            }
        };
        for (key, value) in map {
            let Value::String(key) = key else {
                self.problems.push(Problem::at(
                    "(top level)",
                    format!("unexpected key {key:?}"),
                ));
                continue;
            };
            match key.as_str() {
                "server" => config.server = self.node(value, "server").unwrap_or_default(),
                "listen" => config.listen = self.node(value, "listen").unwrap_or_default(),
                "tls" => config.tls = self.node(value, "tls").unwrap_or_default(),
                "upstreams" => config.upstreams = self.upstreams(value),
                "routes" => config.routes = self.routes(value),
                other => self.unknown_section(other),
            }
        }
        config
    }

    fn unknown_section(&mut self, key: &str) {
        let hint = did_you_mean(key, TOP_KEYS.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let pos = self.source.spans.key(key);
        self.report(key, pos, format!("unknown section `{key}`{hint}"));
        self.source.gaps.add(key);
    }

    fn upstreams(&mut self, value: Value) -> BTreeMap<String, UpstreamConfig> {
        let map = match value {
            Value::Null => return BTreeMap::new(),
            Value::Mapping(map) => map,
            _ => {
                self.fail("upstreams", "expected a mapping of pool name to pool");
                return BTreeMap::new();
            }
        };
        let mut out = BTreeMap::new();
        for (name, pool) in map {
            let Value::String(name) = name else {
                self.problems
                    .push(Problem::at("upstreams", "pool names must be strings"));
                continue;
            };
            if let Some(pool) = self.node(pool, &child_key("upstreams", &name)) {
                out.insert(name, pool);
            }
        }
        out
    }

    /// A route that is not a mapping keeps its place (as `{}`, every key a default) so the
    /// routes after it keep their index; the gap silences the checks of the stand-in.
    fn routes(&mut self, value: Value) -> Vec<RouteConfig> {
        let seq = match value {
            Value::Null => return Vec::new(),
            Value::Sequence(seq) => seq,
            _ => {
                self.fail("routes", "expected a list of routes");
                return Vec::new();
            }
        };
        let empty = || Value::Mapping(Default::default());
        seq.into_iter()
            .enumerate()
            .filter_map(|(i, route)| {
                self.node(route, &child_index("routes", i))
                    .or_else(|| serde_yaml::from_value(empty()).ok())
            })
            .collect()
    }

    /// Deserializes one node. A problem under one of its keys is reported and that key dropped
    /// (recorded as a gap), then the rest is tried again, so one node yields every bad key and,
    /// when what is left still makes a node, a node for the semantic checks.
    fn node<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        let mut value = match value {
            Value::Null => Value::Mapping(Default::default()),
            v => v,
        };
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(node) => return Some(node),
                Err(err) => err,
            };
            let message = err.inner().to_string();
            let (at, first_key) = error_path(path, err.path());
            // "missing field `servers`" after `servers` was dropped for a bad value is no news.
            if !missing_field(&message).is_some_and(|f| dropped.iter().any(|d| d == f)) {
                self.parse_problem(&at, &message);
            }
            let Some(key) = first_key.filter(|k| remove_key(&mut value, k)) else {
                self.source.gaps.add(path);
                return None;
            };
            self.source.gaps.add(child_key(path, &key));
            dropped.push(key);
        }
    }

    /// Reports a serde error; an unknown key points at the key, anything else at the value.
    fn parse_problem(&mut self, at: &str, message: &str) {
        let (message, unknown_key) = with_hint(message);
        let pos = match unknown_key {
            true => self.source.spans.key(at),
            false => self.source.spans.at(at),
        };
        self.report(at, pos, message);
    }

    /// A node of the wrong kind: reported, and nothing under it is checked.
    fn fail(&mut self, path: &str, message: &str) {
        let pos = self.source.spans.at(path);
        self.report(path, pos, message.to_string());
        self.source.gaps.add(path);
    }

    fn report(&mut self, path: &str, pos: Option<Pos>, message: String) {
        let place = pos.map(|pos| Place {
            file: self.source.file.clone(),
            pos,
        });
        self.problems.push(Problem {
            location: path.to_string(),
            place,
            message,
        });
    }
}

/// The full key path of a serde error inside the node at `base`, and the node's key it is under.
fn error_path(base: &str, path: &serde_path_to_error::Path) -> (String, Option<String>) {
    let mut at = base.to_string();
    let mut first = None;
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                first.get_or_insert_with(|| key.clone());
                at = child_key(&at, key);
            }
            Segment::Seq { index } => {
                first.get_or_insert_with(String::new);
                at = child_index(&at, *index);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    (at, first.filter(|k| !k.is_empty()))
}

/// Removes `key` from a mapping; false when there is no such key to remove.
fn remove_key(value: &mut Value, key: &str) -> bool {
    match value {
        Value::Mapping(map) => map.remove(key).is_some(),
        _ => false,
    }
}

/// The field of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(field, _)| field)
}

fn yaml_problem(name: &str, e: &serde_yaml::Error) -> Problem {
    let msg = e.to_string();
    // serde_yaml appends " at line L column C"; keep the message without it.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    match e.location() {
        Some(l) => Problem::in_text(
            name,
            Pos {
                line: l.line(),
                col: l.column(),
            },
            msg,
        ),
        None => Problem::at(name, msg),
    }
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant")
/// with a "did you mean" where one is close; true when the problem is an unknown key.
fn with_hint(msg: &str) -> (String, bool) {
    let (rest, what, key) = if let Some(rest) = msg.strip_prefix("unknown field `") {
        (rest, "key", true)
    } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
        (rest, "value", false)
    } else {
        return (msg.to_string(), false);
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return (msg.to_string(), key);
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let text = match did_you_mean(word, candidates) {
        Some(c) => format!("unknown {what} `{word}` (did you mean `{c}`?)"),
        None => format!(
            "unknown {what} `{word}`; {}",
            expected.trim_start_matches(", ")
        ),
    };
    (text, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "PORT").then(|| "8080".to_string())
    }

    /// Each problem as `line:col path`, in the order reported.
    fn places(err: &ConfigError) -> Vec<String> {
        err.problems
            .iter()
            .map(|p| match &p.place {
                Some(place) => format!("{} {}", place.pos, p.location),
                None => format!("- {}", p.location),
            })
            .collect()
    }

    #[test]
    fn env_substitution() {
        let out = substitute_env("a: ${PORT}\nb: ${NOPE:-x}\n", "f", &env).unwrap();
        assert_eq!(out, "a: 8080\nb: x\n");
        let err = substitute_env("a: 1\nb: ${NOPE}\n", "f", &env).unwrap_err();
        assert_eq!(
            err.problems[0].to_string().split(": ").next(),
            Some("f:2:4")
        );
        assert!(err.problems[0].message.contains("NOPE"));
    }

    #[test]
    fn all_section_errors_reported() {
        let err = load_str(
            "routes:\n  - path: /\n    upstrem: app\n  - path: /x\n    max_body: huge\n",
            "f",
            &env,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems[0].message.contains("did you mean `upstream`"),
            "{err}"
        );
        assert_eq!(
            places(&err),
            ["3:5 routes[0].upstrem", "5:15 routes[1].max_body"],
            "{err}"
        );
    }

    #[test]
    fn every_bad_key_of_one_node_is_reported() {
        let text = "upstreams:\n  app:\n    servers: [127.0.0.1:1]\n    connect_timeout: soon\n    balance: round_robbin\n    retires: 2\n";
        let err = load_str(text, "f", &env).unwrap_err();
        assert_eq!(
            places(&err),
            [
                "4:22 upstreams.app.connect_timeout",
                "5:14 upstreams.app.balance",
                "6:5 upstreams.app.retires",
            ],
            "{err}"
        );
        assert!(err.problems[1]
            .message
            .contains("did you mean `round_robin`"));
        assert!(err.problems[2].message.contains("did you mean `retries`"));
    }

    #[test]
    fn a_dropped_required_key_is_reported_once() {
        let text = "upstreams:\n  app:\n    servers: 5\n";
        let err = load_str(text, "f", &env).unwrap_err();
        assert_eq!(places(&err), ["3:14 upstreams.app.servers"], "{err}");
    }

    #[test]
    fn semantic_checks_run_on_what_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        let text = "listen:\n  http: 127.0.0.1:80\nupstreams:\n  app:\n    servers: [127.0.0.1:1]\n    read_timeout: 1 minute\n  broken:\n    servers: nope\nroutes:\n  - path: /\n    upstream: app\n    max_body: lots\n  - path: /b\n    upstream: broken\n  - path: /c\n    upstream: ap\n  - path: /c\n    upstream: app\n";
        std::fs::write(&path, text).unwrap();
        let err = load_file(&path, &env).unwrap_err();
        assert_eq!(
            places(&err),
            [
                "6:19 upstreams.app.read_timeout",
                "8:14 upstreams.broken.servers",
                "12:15 routes[0].max_body",
                "16:15 routes[2].upstream",
                "17:11 routes[3].path",
            ],
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_mapping_is_one_problem() {
        let err = load_str("- a\n- b\n", "f", &env).unwrap_err();
        assert_eq!(places(&err), ["- (top level)"], "{err}");
    }

    #[test]
    fn a_route_that_is_not_a_mapping_keeps_the_others_indices() {
        let text = "upstreams:\n  app:\n    servers: [127.0.0.1:1]\nroutes:\n  - just a string\n  - path: /x\n    upstream: app\n    hsts: maybe\n";
        let err = load_str(text, "f", &env).unwrap_err();
        assert_eq!(
            places(&err),
            ["5:5 routes[0]", "8:11 routes[1].hsts"],
            "{err}"
        );
    }
}
