//! From an Ingress backend (`service.name` + `port.number`/`port.name`) to a pool's servers:
//! the Service's port, then the ready addresses of its EndpointSlices (label
//! `kubernetes.io/service-name`) on the endpoint port named like the Service port. Terminating
//! endpoints are left out: new requests stop going to them, requests in flight finish.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressServiceBackend;

use super::Snapshot;
use crate::config::model::ServerEntry;

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A backend resolved to servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `namespace/service:port` (the Service port's number).
    pub key: String,
    pub servers: Vec<ServerEntry>,
    /// The servers are pod addresses (may be none ready now), not a DNS name.
    pub discovered: bool,
}

/// Services and EndpointSlices by namespace and Service name.
pub struct Backends<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Backends<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Backends<'a> {
        let mut services = HashMap::new();
        for s in &snapshot.services {
            if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                services.insert((ns.as_str(), name.as_str()), s.as_ref());
            }
        }
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(service)) = (&slice.metadata.namespace, service) {
                slices
                    .entry((ns.as_str(), service.as_str()))
                    .or_default()
                    .push(slice.as_ref());
            }
        }
        Backends { services, slices }
    }

    /// The servers of `backend` in namespace `ns`, or what is missing, in words.
    pub fn resolve(&self, ns: &str, backend: &IngressServiceBackend) -> Result<Resolved, String> {
        let name = backend.name.as_str();
        let service = self
            .services
            .get(&(ns, name))
            .ok_or_else(|| format!("Service `{ns}/{name}` not found"))?;
        let port = service_port(service, backend)
            .map_err(|why| format!("Service `{ns}/{name}`: {why}"))?;
        let key = format!("{ns}/{name}:{}", port.port);
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let external = spec
                .and_then(|s| s.external_name.as_deref())
                .ok_or_else(|| format!("Service `{ns}/{name}`: ExternalName without a name"))?;
            return Ok(Resolved {
                key,
                servers: vec![entry(format!("{external}:{}", port.port))],
                discovered: false,
            });
        }
        let mut servers = Vec::new();
        for slice in self.slices.get(&(ns, name)).into_iter().flatten() {
            servers.extend(ready_addresses(slice, port));
        }
        servers.sort();
        servers.dedup();
        Ok(Resolved {
            key,
            servers: servers.into_iter().map(entry).collect(),
            discovered: true,
        })
    }
}

fn entry(addr: String) -> ServerEntry {
    ServerEntry { addr, weight: 1 }
}

/// The Service port a backend names, by number or by name.
fn service_port<'s>(
    service: &'s Service,
    backend: &IngressServiceBackend,
) -> Result<&'s ServicePort, String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let wanted = backend.port.as_ref();
    match (
        wanted.and_then(|p| p.number),
        wanted.and_then(|p| p.name.as_deref()),
    ) {
        (Some(n), _) => ports
            .iter()
            .find(|p| p.port == n)
            .ok_or_else(|| format!("no port {n}")),
        (None, Some(wanted)) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(wanted))
            .ok_or_else(|| format!("no port named `{wanted}`")),
        (None, None) => Err("the backend names no port (port.number or port.name)".into()),
    }
}

/// `ip:port` of each ready, not terminating endpoint of `slice` on the Service port `port`
/// (EndpointSlice ports carry the Service port's name).
fn ready_addresses<'s>(
    slice: &'s EndpointSlice,
    port: &ServicePort,
) -> impl Iterator<Item = String> + 's {
    let name = port.name.as_deref().unwrap_or("");
    let number = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or("") == name)
        .and_then(|p| p.port)
        .filter(|_| matches!(slice.address_type.as_str(), "IPv4" | "IPv6"));
    let v6 = slice.address_type == "IPv6";
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(move |_| number.is_some())
        .filter(|e| {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            ready && !terminating
        })
        .flat_map(|e| e.addresses.iter())
        .filter(move |a| a.parse::<std::net::IpAddr>().is_ok())
        .map(move |a| match v6 {
            true => format!("[{a}]:{}", number.unwrap_or_default()),
            false => format!("{a}:{}", number.unwrap_or_default()),
        })
}
