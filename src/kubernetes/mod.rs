//! `rproxy --kubernetes`: Kubernetes objects become rproxy's configuration. `snapshot` holds the
//! objects, `translate` turns a snapshot into the same `Config` a file gives (plus certificates
//! from Secrets and a problem per object that cannot be served as written), and `controller`
//! watches the API server and publishes each translation through `reload::publish`.

pub mod annotations;
mod backends;
pub mod controller;
pub mod rbac;
pub mod snapshot;
pub mod translate;

use std::fmt;
use std::path::PathBuf;

use crate::config::{load_str, ConfigError, Loaded};

pub use snapshot::Snapshot;
pub use translate::{translate, Translated};

/// The `spec.controller` of an IngressClass that rproxy serves.
pub const CONTROLLER: &str = "rproxy.dev/ingress-controller";

/// The IngressClass name rproxy serves by default (`--ingress-class`).
pub const DEFAULT_CLASS: &str = "rproxy";

/// The base configuration of `rproxy --kubernetes` without `-c`: unprivileged ports (a
/// Service maps 80/443 to them), the admin listener for probes and metrics.
pub const DEFAULT_BASE: &str = "\
listen:
  http: \"0.0.0.0:8080\"
  https: \"0.0.0.0:8443\"
  admin: \"0.0.0.0:9901\"
";

/// `DEFAULT_BASE`, loaded as if it were a file in the working directory.
pub fn default_base() -> Result<Loaded, ConfigError> {
    let config = load_str(DEFAULT_BASE, "(built-in base)", &|_| None)?;
    Ok(Loaded {
        config,
        path: PathBuf::from("(built-in base)"),
        dir: PathBuf::from("."),
        source: Default::default(),
    })
}

/// What the controller was told at start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The IngressClass this controller serves (`--ingress-class`).
    pub ingress_class: String,
    /// Serve Ingresses that name no class, whatever the IngressClass objects say
    /// (they also say it: `ingressclass.kubernetes.io/is-default-class: "true"` on ours).
    pub default_class: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_class: DEFAULT_CLASS.to_string(),
            default_class: false,
        }
    }
}

/// An object a problem is about: its kind, namespace and name (events go on it later).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Something about one object that rproxy cannot serve as written (a Warning event, later).
/// The rest of the object, and every other object, is served.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectProblem {
    pub object: ObjectRef,
    pub message: String,
}

impl fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}
