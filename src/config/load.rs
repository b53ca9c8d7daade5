//! Reading `proxy.yaml`: `${VAR}` / `${VAR:-default}` substitution, then a YAML parse that
//! reports every section's problems (unknown keys with "did you mean", bad values) at once.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::model::{Config, RouteConfig, UpstreamConfig};
use super::{did_you_mean, ConfigError, Loaded, Problem};

/// Reads, substitutes and parses a configuration file.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::from(vec![Problem::at(
            &name,
            format!("cannot read the file: {e}"),
        )])
    })?;
    let config = load_str(&text, &name, env)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        dir,
    })
}

/// Substitutes and parses configuration text; `name` is used in error locations.
pub fn load_str(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = substitute_env(text, name, env)?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| vec![yaml_problem(name, &e)])?;
    let doc = match doc {
        Value::Null => Value::Mapping(Default::default()),
        other => other,
    };
    let mut problems = Vec::new();
    let config = parse_sections(doc, &mut problems);
    if problems.is_empty() {
        if let Some(config) = config {
            return Ok(config);
        }
    }
    locate_first(&text, name, &mut problems);
    if problems.is_empty() {
        problems.push(Problem::at(name, "the file could not be parsed"));
    }
    Err(problems.into())
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
                    problems.push(Problem::at(
                        format!("{name}:{}:{col}", lineno + 1),
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

/// Deserializes each section (and each upstream and route) on its own so one mistake does not
/// hide the others.
fn parse_sections(doc: Value, problems: &mut Vec<Problem>) -> Option<Config> {
    let Value::Mapping(map) = doc else {
        problems.push(Problem::at(
            "(top level)",
            "expected a mapping of sections (server, listen, tls, upstreams, routes)",
        ));
        return None;
    };
    let mut config = Config::default();
    let mut ok = true;
    for (key, value) in map {
        let key = match key {
            Value::String(s) => s,
            other => {
                problems.push(Problem::at(
                    "(top level)",
                    format!("unexpected key {other:?}"),
                ));
                ok = false;
                continue;
            }
        };
        ok &= match key.as_str() {
            "server" => section(value, "server", problems)
                .map(|v| config.server = v)
                .is_some(),
            "listen" => section(value, "listen", problems)
                .map(|v| config.listen = v)
                .is_some(),
            "tls" => section(value, "tls", problems)
                .map(|v| config.tls = v)
                .is_some(),
            "upstreams" => parse_upstreams(value, problems)
                .map(|v| config.upstreams = v)
                .is_some(),
            "routes" => parse_routes(value, problems)
                .map(|v| config.routes = v)
                .is_some(),
            other => {
                let hint = did_you_mean(other, TOP_KEYS.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                problems.push(Problem::at(
                    other,
                    format!("unknown section `{other}`{hint}"),
                ));
                false
            }
        };
    }
    ok.then_some(config)
}

fn parse_upstreams(
    value: Value,
    problems: &mut Vec<Problem>,
) -> Option<std::collections::BTreeMap<String, UpstreamConfig>> {
    let Value::Mapping(map) = value else {
        if value.is_null() {
            return Some(Default::default());
        }
        problems.push(Problem::at(
            "upstreams",
            "expected a mapping of pool name to pool",
        ));
        return None;
    };
    let mut out = std::collections::BTreeMap::new();
    let mut ok = true;
    for (name, pool) in map {
        let Value::String(name) = name else {
            problems.push(Problem::at("upstreams", "pool names must be strings"));
            ok = false;
            continue;
        };
        match section::<UpstreamConfig>(pool, &format!("upstreams.{name}"), problems) {
            Some(p) => {
                out.insert(name, p);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn parse_routes(value: Value, problems: &mut Vec<Problem>) -> Option<Vec<RouteConfig>> {
    let Value::Sequence(seq) = value else {
        if value.is_null() {
            return Some(Vec::new());
        }
        problems.push(Problem::at("routes", "expected a list of routes"));
        return None;
    };
    let parsed: Vec<Option<RouteConfig>> = seq
        .into_iter()
        .enumerate()
        .map(|(i, r)| section(r, &format!("routes[{i}]"), problems))
        .collect();
    parsed.into_iter().collect()
}

fn section<T: DeserializeOwned>(
    value: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = match value {
        Value::Null => Value::Mapping(Default::default()),
        v => v,
    };
    match serde_yaml::from_value(value) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(Problem::at(path, with_hint(&e.to_string())));
            None
        }
    }
}

/// Gives the problem serde_yaml meets first a `file:line:col` (the whole-file parse stops there).
fn locate_first(text: &str, name: &str, problems: &mut [Problem]) {
    let Err(e) = serde_yaml::from_str::<Config>(text) else {
        return;
    };
    let Some(loc) = e.location() else { return };
    let msg = e.to_string();
    // serde_yaml prefixes the key path: "routes[0].max_body: invalid value ...".
    let path = msg
        .split_once(": ")
        .map(|(p, _)| p)
        .filter(|p| !p.contains(' '))
        .unwrap_or("");
    let lone = problems.len() == 1;
    let index = problems
        .iter()
        .position(|p| !path.is_empty() && path.starts_with(p.location.as_str()))
        .or(if lone { Some(0) } else { None });
    if let Some(p) = index.and_then(|i| problems.get_mut(i)) {
        let path = if path.is_empty() {
            p.location.clone()
        } else {
            path.to_string()
        };
        p.location = format!("{name}:{}:{} ({path})", loc.line(), loc.column());
    }
}

fn yaml_problem(name: &str, e: &serde_yaml::Error) -> Problem {
    let msg = e.to_string();
    // serde_yaml appends " at line L column C"; keep the message without it.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    let location = match e.location() {
        Some(l) => format!("{name}:{}:{}", l.line(), l.column()),
        None => name.to_string(),
    };
    Problem::at(location, with_hint(&msg))
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn with_hint(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match did_you_mean(field, candidates) {
        Some(c) => format!("unknown key `{field}` (did you mean `{c}`?)"),
        None => format!(
            "unknown key `{field}`; {}",
            expected.trim_start_matches(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "PORT").then(|| "8080".to_string())
    }

    #[test]
    fn env_substitution() {
        let out = substitute_env("a: ${PORT}\nb: ${NOPE:-x}\n", "f", &env).unwrap();
        assert_eq!(out, "a: 8080\nb: x\n");
        let err = substitute_env("a: 1\nb: ${NOPE}\n", "f", &env).unwrap_err();
        assert_eq!(err.problems[0].location, "f:2:4");
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
        assert!(err.problems[0].location.starts_with("f:3:"), "{err}");
        assert_eq!(err.problems[1].location, "routes[1]");
    }
}
