//! `proxy.yaml` text -> `config::load_str` -> `config::validate`: must never panic, and every
//! problem must say where it is.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use rproxy::config::{load_str, validate, Config, Loaded};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${VAR}` with no default is an error; `${VAR:-x}` takes the default.
    let config = match load_str(text, "fuzz.yaml", &|_| None) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error with no problem in it");
            return;
        }
    };
    let config = defuse(config);
    let loaded = Loaded {
        config,
        path: "fuzz.yaml".into(),
        dir: ".".into(),
        source: Default::default(),
    };
    for p in validate(&loaded) {
        assert!(!p.location.is_empty(), "a problem with no location: {p:?}");
        assert!(!p.message.is_empty(), "a problem with no message: {p:?}");
    }
});

/// `validate` reads `tls.acme.ca` whole: keep the fuzzer away from device and kernel files
/// (`/dev/zero`, `/dev/stdin`, `/proc/kcore`) that would hang it or fill memory.
fn defuse(mut config: Config) -> Config {
    if let Some(acme) = config.tls.acme.as_mut() {
        if acme.ca.as_deref().is_some_and(|ca| !harmless(ca)) {
            acme.ca = Some(PathBuf::from("fuzz-no-such-ca.pem"));
        }
    }
    config
}

fn harmless(path: &Path) -> bool {
    match std::fs::canonicalize(path) {
        // Not there: the "cannot read" branch, which is what we want to reach.
        Err(_) => true,
        Ok(real) => {
            let small_file =
                std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() < 1 << 20);
            small_file
                && !["/dev", "/proc", "/sys"]
                    .iter()
                    .any(|d| real.starts_with(d))
        }
    }
}
