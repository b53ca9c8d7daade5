//! Reload helpers: signals to the `rproxy` child and whole-file rewrites of `proxy.yaml` the
//! way editors do them (write a sibling, rename it over the file).

use std::path::Path;

use super::Proxy;

/// Writes `contents` to `<path>.tmp` and renames it over `path` (an atomic replace).
pub fn write_atomic(path: &Path, contents: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

impl Proxy {
    /// Sends `signal` to the child (e.g. `libc::SIGHUP`); panics when `kill` fails.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    /// Replaces `proxy.yaml` with `yaml` atomically (no reload is triggered here: the proxy's
    /// poller sees the new content) and remembers it as [`Proxy::yaml`].
    pub fn rewrite(&mut self, yaml: &str) {
        write_atomic(&self.config, yaml);
        self.yaml = yaml.to_string();
    }
}
