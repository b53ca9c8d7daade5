//! A snapshot of Kubernetes objects -> rproxy's configuration: the Ingresses of our class (by
//! `spec.ingressClassName`, the old `kubernetes.io/ingress.class` annotation, or no class when
//! ours is the default) become routes, their Services' ready endpoints pools, their TLS
//! Secrets certificates, all merged into the base configuration (`-c`, which gives listeners
//! and server settings). Pure: no I/O, no clock. Whatever cannot be served as written is a
//! problem on its object and leaves out only its own rules; nothing here panics on input.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::annotations::{self, Annotations};
use super::backends::Backends;
use super::{ObjectProblem, ObjectRef, Options, Snapshot, CONTROLLER};
use crate::config::model::{RouteConfig, Size, UpstreamConfig};
use crate::config::{validate, Loaded};
use crate::tls::InlineCert;

/// The deprecated annotation that named an Ingress's class before `spec.ingressClassName`.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// On an IngressClass: Ingresses without a class are its.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// What a snapshot gives: a configuration to compile, certificates, and problems.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The base configuration with the cluster's pools and routes added after its own.
    pub loaded: Loaded,
    /// Certificates from the TLS Secrets that the served Ingresses name.
    pub certs: Vec<InlineCert>,
    /// One per thing that cannot be served as written, sorted by object.
    pub problems: Vec<ObjectProblem>,
    /// Ingresses of our class.
    pub ingresses: usize,
}

/// Translates `snapshot` for a controller with `options`, on top of `base`.
pub fn translate(snapshot: &Snapshot, options: &Options, base: &Loaded) -> Translated {
    let mut t = Translation {
        base,
        backends: Backends::new(snapshot),
        secrets: snapshot
            .secrets
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect(),
        https: base.config.listen.https.is_some(),
        claims: HashMap::new(),
        upstreams: BTreeMap::new(),
        routes: Vec::new(),
        certs: BTreeMap::new(),
        problems: Vec::new(),
    };
    for (i, r) in base.config.routes.iter().enumerate() {
        let key = claim_key(r.host.as_deref(), &r.path, r.exact);
        t.claims
            .insert(key, format!("routes[{i}] of the base configuration"));
    }
    let default = options.default_class || is_default_class(snapshot, options);
    let mut ours: Vec<&Ingress> = snapshot
        .ingresses
        .iter()
        .map(|i| i.as_ref())
        .filter(|i| is_ours(i, snapshot, options, default))
        .collect();
    // The oldest Ingress wins a host and path (ingress-nginx's rule); ties by namespace and name.
    ours.sort_by_key(|i| {
        let created = i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            created.is_none(),
            created,
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    for ingress in &ours {
        t.ingress(ingress);
    }
    t.finish(ours.len())
}

/// Is our IngressClass marked as the cluster's default?
fn is_default_class(snapshot: &Snapshot, options: &Options) -> bool {
    snapshot.ingress_classes.iter().any(|c| {
        let ours = c.metadata.name.as_deref() == Some(options.ingress_class.as_str())
            && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
        let marked = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v.trim() == "true");
        ours && marked
    })
}

/// Does this controller serve `ingress`?
fn is_ours(ingress: &Ingress, snapshot: &Snapshot, options: &Options, default: bool) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if let Some(name) = named {
        // Ours by name, unless an IngressClass of that name belongs to another controller.
        let class = snapshot
            .ingress_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name));
        let controller = class.and_then(|c| c.spec.as_ref()?.controller.as_deref());
        return name == options.ingress_class && controller.is_none_or(|c| c == CONTROLLER);
    }
    let annotated = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION));
    match annotated {
        Some(class) => class.trim() == options.ingress_class,
        None => default,
    }
}

/// What claims a host and path: lower-cased host, the path as matched, exactness.
type ClaimKey = (Option<String>, String, bool);

fn claim_key(host: Option<&str>, path: &str, exact: bool) -> ClaimKey {
    let path = match exact {
        true => path.to_string(),
        false => path.trim_end_matches('/').to_string(),
    };
    (host.map(str::to_ascii_lowercase), path, exact)
}

/// A translation under way.
struct Translation<'a> {
    base: &'a Loaded,
    backends: Backends<'a>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    /// Does the base configuration have an https listener?
    https: bool,
    /// Who has each host and path: the first Ingress (or the base file) to claim it.
    claims: HashMap<ClaimKey, String>,
    upstreams: BTreeMap<String, (UpstreamConfig, Vec<ObjectRef>)>,
    routes: Vec<(RouteConfig, ObjectRef)>,
    /// By Secret (`namespace/name`).
    certs: BTreeMap<String, InlineCert>,
    problems: Vec<ObjectProblem>,
}

/// One Ingress being translated.
struct IngressCtx<'i> {
    object: ObjectRef,
    namespace: &'i str,
    annotations: Annotations,
    /// Hosts its `spec.tls` covers (lower case).
    tls_hosts: HashSet<String>,
}

impl<'a> Translation<'a> {
    fn problem(&mut self, object: &ObjectRef, message: impl Into<String>) {
        self.problems.push(ObjectProblem {
            object: object.clone(),
            message: message.into(),
        });
    }

    fn ingress(&mut self, ingress: &Ingress) {
        let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
        let object = ObjectRef {
            kind: "Ingress",
            namespace: namespace.to_string(),
            name: ingress.metadata.name.clone().unwrap_or_default(),
        };
        let (mut annotations, problems) = annotations::parse(
            ingress
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
        );
        // Every replica must sign sticky cookies alike: the Ingress's UID is the same for all
        // of them and never shown to clients.
        if let Some(sticky) = &mut annotations.pool.sticky {
            sticky.secret = ingress.metadata.uid.clone().filter(|u| u.len() >= 16);
        }
        for p in problems {
            self.problem(&object, p);
        }
        let mut ctx = IngressCtx {
            object,
            namespace,
            annotations,
            tls_hosts: HashSet::new(),
        };
        let Some(spec) = &ingress.spec else {
            return self.problem(&ctx.object, "no spec");
        };
        if ctx.annotations.force_ssl_redirect && !self.https {
            self.problem(
                &ctx.object,
                "force-ssl-redirect: the base configuration has no https listener; ignored",
            );
        }
        for tls in spec.tls.iter().flatten() {
            let hosts: Vec<String> = tls
                .hosts
                .iter()
                .flatten()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            ctx.tls_hosts.extend(hosts.iter().cloned());
            if let Some(secret) = &tls.secret_name {
                self.tls_secret(&ctx, secret, &hosts);
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.as_deref().filter(|h| !h.is_empty());
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let text = path
                    .path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/");
                let exact = match path.path_type.as_str() {
                    "Exact" => true,
                    "Prefix" | "ImplementationSpecific" => false,
                    other => {
                        self.problem(
                            &ctx.object,
                            format!("path `{text}`: pathType `{other}` is not Exact, Prefix or ImplementationSpecific; not served"),
                        );
                        continue;
                    }
                };
                self.path(&ctx, host, text, exact, &path.backend);
            }
        }
        if let Some(backend) = &spec.default_backend {
            self.path(&ctx, None, "/", false, backend);
        }
    }

    /// The certificate of one `spec.tls` entry.
    fn tls_secret(&mut self, ctx: &IngressCtx, name: &str, hosts: &[String]) {
        let source = format!("{}/{name}", ctx.namespace);
        if !self.https {
            return self.problem(
                &ctx.object,
                format!("TLS Secret `{source}`: the base configuration has no https listener; not served"),
            );
        }
        if let Some(cert) = self.certs.get(&source) {
            let cert = cert.clone();
            return self.uncovered(ctx, &cert, hosts);
        }
        let Some(secret) = self.secrets.get(&(ctx.namespace, name)).copied() else {
            return self.problem(&ctx.object, format!("TLS Secret `{source}` not found"));
        };
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return self.problem(
                &ctx.object,
                format!("Secret `{source}` is not of type {TLS_SECRET_TYPE}"),
            );
        }
        let field = |key: &str| -> Option<Vec<u8>> {
            let data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone());
            data.or_else(|| {
                let text = secret.string_data.as_ref()?.get(key)?;
                Some(text.as_bytes().to_vec())
            })
        };
        let (Some(cert), Some(key)) = (field("tls.crt"), field("tls.key")) else {
            return self.problem(
                &ctx.object,
                format!("TLS Secret `{source}` lacks tls.crt or tls.key"),
            );
        };
        match InlineCert::parse(&source, &cert, &key) {
            Ok(cert) => {
                self.uncovered(ctx, &cert, hosts);
                self.certs.insert(source, cert);
            }
            Err(why) => self.problem(
                &ctx.object,
                format!("TLS Secret `{source}`: bad certificate: {why}"),
            ),
        }
    }

    /// Says which of `hosts` the certificate does not cover.
    fn uncovered(&mut self, ctx: &IngressCtx, cert: &InlineCert, hosts: &[String]) {
        for host in hosts.iter().filter(|h| !cert.covers(h)) {
            self.problem(
                &ctx.object,
                format!(
                    "the certificate of TLS Secret `{}` does not cover `{host}`",
                    cert.source
                ),
            );
        }
    }

    /// One path of a rule (or the default backend: no host, `/`).
    fn path(
        &mut self,
        ctx: &IngressCtx,
        host: Option<&str>,
        path: &str,
        exact: bool,
        backend: &IngressBackend,
    ) {
        let a = &ctx.annotations;
        let (path, strip) = match &a.rewrite_target {
            Some(target) => match annotations::strip_rewrite(path, target) {
                Some(prefix) => (prefix, true),
                None => {
                    return self.problem(
                        &ctx.object,
                        format!("path `{path}`: rewrite-target `{target}` is not supported (only rewrites that remove the path's prefix: `/` on a plain path, `/$2` on `/prefix(/|$)(.*)`); not served"),
                    )
                }
            },
            None if a.use_regex && annotations::is_regex(path) => {
                return self.problem(
                    &ctx.object,
                    format!("path `{path}`: regular-expression paths (use-regex) are not supported; not served"),
                )
            }
            None => (path.to_string(), false),
        };
        let at = format!("{}{path}", host.unwrap_or("*"));
        let Some(service) = &backend.service else {
            return self.problem(
                &ctx.object,
                format!("{at}: only Service backends are supported (not resource); not served"),
            );
        };
        let resolved = match self.backends.resolve(ctx.namespace, service) {
            Ok(r) => r,
            Err(why) => return self.problem(&ctx.object, format!("{at}: {why}; not served")),
        };
        let key = claim_key(host, &path, exact);
        if let Some(owner) = self.claims.get(&key) {
            let owner = owner.clone();
            return self.problem(
                &ctx.object,
                format!("{at}: already served by {owner}; not served"),
            );
        }
        self.claims.insert(key, ctx.object.to_string());
        let pool = match a.pool.is_default() {
            true => resolved.key.clone(),
            false => format!("{}@{}", resolved.key, ctx.object.name),
        };
        if self.base.config.upstreams.contains_key(&pool) {
            return self.problem(
                &ctx.object,
                format!("{at}: the base configuration has a pool named `{pool}`; not served"),
            );
        }
        let entry = self.upstreams.entry(pool.clone()).or_insert_with(|| {
            let mut cfg = UpstreamConfig::with_servers(resolved.servers.clone());
            cfg.discovered = resolved.discovered;
            a.pool.apply(&mut cfg);
            (cfg, Vec::new())
        });
        if !entry.1.contains(&ctx.object) {
            entry.1.push(ctx.object.clone());
        }
        let mut route = RouteConfig::to_upstream(host.map(str::to_string), path.clone(), pool);
        route.name = Some(format!("{}/{}:{at}", ctx.namespace, ctx.object.name));
        route.exact = exact;
        route.strip_prefix = strip;
        if let Some(n) = a.max_body {
            route.max_body = Size(n);
        }
        route.rate_limit = a.rate_limit.clone();
        if self.https {
            let tls = host.is_some_and(|h| ctx.tls_hosts.contains(&h.to_ascii_lowercase()));
            let redirect = a.force_ssl_redirect || (tls && a.ssl_redirect.unwrap_or(true));
            route.redirect_https = Some(redirect);
        }
        self.routes.push((route, ctx.object.clone()));
    }

    /// Merges into the base configuration; whatever the configuration's own checks still reject
    /// is left out and becomes a problem on the object it came from.
    fn finish(mut self, ingresses: usize) -> Translated {
        let base_routes = self.base.config.routes.len();
        // Each pass leaves out everything the checks reject; a second pass is only needed when
        // leaving something out uncovers more (it does not today; bounded all the same).
        for _ in 0..3 {
            let mut bad_routes = BTreeMap::new();
            let mut bad_pools = BTreeMap::new();
            for p in validate(&self.merged()) {
                let route = route_index(&p.location)
                    .and_then(|i| i.checked_sub(base_routes))
                    .filter(|i| *i < self.routes.len());
                if let Some(i) = route {
                    bad_routes.entry(i).or_insert(p);
                } else if let Some(name) =
                    pool_name(&p.location).filter(|n| self.upstreams.contains_key(*n))
                {
                    bad_pools.entry(name.to_string()).or_insert(p);
                }
            }
            if bad_routes.is_empty() && bad_pools.is_empty() {
                break;
            }
            for (i, p) in bad_routes.into_iter().rev() {
                let (_, object) = self.routes.remove(i);
                self.problem(&object, format!("rejected: {p}; not served"));
            }
            for (name, p) in bad_pools {
                let Some((_, objects)) = self.upstreams.remove(&name) else {
                    continue;
                };
                for object in &objects {
                    self.problem(object, format!("rejected: {p}; not served"));
                }
                self.routes
                    .retain(|(r, _)| r.upstream.as_deref() != Some(name.as_str()));
            }
        }
        let loaded = self.merged();
        self.problems.sort();
        self.problems.dedup();
        Translated {
            loaded,
            certs: self.certs.into_values().collect(),
            problems: self.problems,
            ingresses,
        }
    }

    fn merged(&self) -> Loaded {
        let mut loaded = self.base.clone();
        let c = &mut loaded.config;
        // As in ingress-nginx, hosts are redirected to https per Ingress (their TLS hosts), not
        // all at once: unless the base says `tls.redirect_http`, a path no route serves is not.
        c.tls.redirect_http.get_or_insert(false);
        c.upstreams.extend(
            self.upstreams
                .iter()
                .map(|(n, (cfg, _))| (n.clone(), cfg.clone())),
        );
        c.routes.extend(self.routes.iter().map(|(r, _)| r.clone()));
        loaded
    }
}

/// `routes[12].path` -> 12.
fn route_index(location: &str) -> Option<usize> {
    let rest = location.strip_prefix("routes[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// `upstreams.ns/web:80.servers[0]` -> `ns/web:80` (our pool names have no dots).
fn pool_name(location: &str) -> Option<&str> {
    let rest = location.strip_prefix("upstreams.")?;
    Some(rest.split('.').next().unwrap_or(rest))
}
