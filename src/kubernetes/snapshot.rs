//! A snapshot of the Kubernetes objects rproxy reads: what the controller's watchers hold at
//! one moment, or what a YAML manifest lists (tests, benchmarks). Gateway API kinds join here.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Deserialize;

/// The objects a translation reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub ingresses: Vec<Arc<Ingress>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Secrets of type `kubernetes.io/tls`.
    pub secrets: Vec<Arc<Secret>>,
}

impl Snapshot {
    /// Reads a multi-document YAML manifest (`---` between objects, `kind: List` allowed).
    /// Kinds rproxy does not read are skipped; an object of a known kind that does not
    /// deserialize is an error naming its document.
    pub fn from_yaml(text: &str) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| format!("document {}: {e}", i + 1))?;
            snapshot
                .add_value(value)
                .map_err(|e| format!("document {}: {e}", i + 1))?;
        }
        Ok(snapshot)
    }

    fn add_value(&mut self, mut value: serde_yaml::Value) -> Result<(), String> {
        fn de<K: serde::de::DeserializeOwned>(v: serde_yaml::Value) -> Result<Arc<K>, String> {
            serde_yaml::from_value(v)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if matches!(
            kind.as_str(),
            "Ingress" | "Service" | "EndpointSlice" | "Secret"
        ) {
            default_namespace(&mut value);
        }
        match kind.as_str() {
            "IngressClass" => self.ingress_classes.push(de(value)?),
            "Ingress" => self.ingresses.push(de(value)?),
            "Service" => self.services.push(de(value)?),
            "EndpointSlice" => self.endpoint_slices.push(de(value)?),
            "Secret" => self.secrets.push(de(value)?),
            "List" => {
                let items = value.get("items").and_then(|i| i.as_sequence()).cloned();
                for item in items.unwrap_or_default() {
                    self.add_value(item)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A namespaced object written without `metadata.namespace` is in `default`, as `kubectl
/// apply` without `-n` puts it.
fn default_namespace(value: &mut serde_yaml::Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
        let key = serde_yaml::Value::from("namespace");
        if !meta.contains_key(&key) {
            meta.insert(key, serde_yaml::Value::from("default"));
        }
    }
}
