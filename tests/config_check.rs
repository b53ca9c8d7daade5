//! `rproxy -t -c FILE`: good files print `ok` and exit 0; every file in `tests/fixtures/bad/`
//! exits 1 and prints each problem it announces in its `# expect: <substring>` header lines.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{bin, check_config, check_config_env};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `# expect: ...` lines at the top of a fixture.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Runs `-t` on `path` with no `RPROXY_TEST_*` variables that a fixture relies on being unset.
fn check(path: &Path) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("-t")
        .arg("-c")
        .arg(path)
        .env_remove("RPROXY_TEST_SURELY_UNSET")
        .stdin(std::process::Stdio::null());
    cmd.output().expect("run rproxy -t")
}

#[test]
fn every_bad_fixture_is_rejected_with_its_message() {
    let dir = fixtures().join("bad");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read tests/fixtures/bad")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 13, "expected the full table of bad fixtures");

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("read fixture");
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name}: no `# expect:` line");

        let out = check(path);
        let printed = output_text(&out);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit {:?}, want 1; output:\n{printed}",
                out.status.code()
            ));
            continue;
        }
        for want in &expected {
            if !printed.contains(want.as_str()) {
                failures.push(format!("{name}: output lacks `{want}`; output:\n{printed}"));
            }
        }
        if printed.lines().any(|l| l.trim() == "ok") {
            failures.push(format!("{name}: printed `ok` for a bad file:\n{printed}"));
        }
        // Every problem line says where: `file:line:col` or a key path, then what is wrong.
        for line in printed.lines().filter(|l| !l.trim().is_empty()) {
            let located = line
                .split_once(": ")
                .is_some_and(|(loc, msg)| !loc.trim().is_empty() && !msg.trim().is_empty());
            if !located {
                failures.push(format!("{name}: line without a location: `{line}`"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn two_problems_are_reported_on_two_lines() {
    let path = fixtures().join("bad/two_problems.yaml");
    let out = check(&path);
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let admin = printed.lines().position(|l| l.contains("listen.admin"));
    let route = printed
        .lines()
        .position(|l| l.contains("routes[1].upstream"));
    assert!(
        admin.is_some() && route.is_some() && admin != route,
        "both problems, each on its own line:\n{printed}"
    );
    // The misspelt pool name gets a suggestion.
    let route_line = printed.lines().nth(route.unwrap()).unwrap();
    assert!(
        route_line.contains("did you mean") && route_line.contains("app"),
        "suggest `app` for `ap`: {route_line}"
    );
}

/// `many_problems.yaml` has type errors and semantic problems in several sections: one run
/// prints each of them, at the `file:line:col` its `# expect:` line names, and nothing else.
#[test]
fn every_problem_of_a_file_is_listed_at_once_with_its_line_and_column() {
    let path = fixtures().join("bad/many_problems.yaml");
    let text = std::fs::read_to_string(&path).expect("read fixture");
    let expected = expectations(&text);
    assert!(expected.len() >= 6, "the fixture announces its problems");
    let out = check(&path);
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let lines: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem, no more:\n{printed}"
    );
    // In the file's order, each line starting with the full path and the expected place.
    let file = path.display().to_string();
    for (line, want) in lines.iter().zip(&expected) {
        let want = want.replacen("many_problems.yaml", &file, 1);
        assert!(line.starts_with(&want), "want `{want}`, got `{line}`");
    }
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let path = fixtures().join("bad/yaml_syntax.yaml");
    let out = check(&path);
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    // `<file>:<line>:<col>` with numeric line and column.
    let located = printed.lines().any(|l| {
        l.split("yaml_syntax.yaml:").nth(1).is_some_and(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            !line.is_empty()
                && line.chars().all(|c| c.is_ascii_digit())
                && !col.is_empty()
                && col.chars().all(|c| c.is_ascii_digit())
        })
    });
    assert!(located, "no file:line:col in:\n{printed}");
}

#[test]
fn good_full_file_prints_ok() {
    let path = fixtures().join("good/full.yaml");
    let out = check_config(&path);
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{printed}"
    );
}

#[test]
fn env_vars_are_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(
        &path,
        "listen:\n  http: \"127.0.0.1:${RPROXY_TEST_PORT}\"\n  admin: \"${RPROXY_TEST_ADMIN:-127.0.0.1:9901}\"\n\
         upstreams:\n  app:\n    servers: [\"${RPROXY_TEST_UPSTREAM}\"]\n\
         routes:\n  - path: /\n    upstream: app\n",
    )
    .unwrap();

    let out = check_config_env(
        &path,
        &[
            ("RPROXY_TEST_PORT", "18081"),
            ("RPROXY_TEST_UPSTREAM", "127.0.0.1:9000"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // A substituted value is checked like a written one.
    let out = check_config_env(
        &path,
        &[
            ("RPROXY_TEST_PORT", "18081"),
            ("RPROXY_TEST_UPSTREAM", "not-an-address"),
        ],
    );
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("upstreams.app.servers[0]"), "{printed}");

    // Both unset variables without defaults are named.
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("-t")
        .arg("-c")
        .arg(&path)
        .env_remove("RPROXY_TEST_PORT")
        .env_remove("RPROXY_TEST_UPSTREAM")
        .env_remove("RPROXY_TEST_ADMIN");
    let out = cmd.output().unwrap();
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("RPROXY_TEST_PORT"), "{printed}");
    assert!(printed.contains("RPROXY_TEST_UPSTREAM"), "{printed}");
    assert!(
        !printed.contains("RPROXY_TEST_ADMIN"),
        "a variable with a default is no problem:\n{printed}"
    );
}

#[test]
fn missing_file_is_an_error() {
    let out = check_config(Path::new("/nonexistent/rproxy/proxy.yaml"));
    let printed = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("/nonexistent/rproxy/proxy.yaml"),
        "{printed}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = std::process::Command::new(bin())
        .arg("--no-such-flag")
        .output()
        .expect("run rproxy");
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}

#[test]
fn bad_file_at_start_exits_1_without_serving() {
    let path = fixtures().join("bad/missing_upstream.yaml");
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(bin())
        .arg("-c")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run rproxy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(common::POLL);
    };
    let printed = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("still running after 10 s:\n{printed}"));
    assert_eq!(status.code(), Some(1), "{printed}");
    assert!(printed.contains("routes[0].upstream"), "{printed}");
}
