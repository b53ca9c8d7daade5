//! A fake Kubernetes API server for the kinds rproxy reads: answers list and watch requests
//! from objects held in memory; a test changes them and the open watches get the events, or
//! ends a watch with 410 Gone. Served to kube-rs through `tower_test::mock` (`mock_client`) or
//! over a real socket with hyper (`serve`, for the rproxy binary through a KUBECONFIG file).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Kind -> the collection path of a list or watch across all namespaces.
const RESOURCES: &[(&str, &str)] = &[
    ("IngressClass", "/apis/networking.k8s.io/v1/ingressclasses"),
    ("Ingress", "/apis/networking.k8s.io/v1/ingresses"),
    ("Service", "/api/v1/services"),
    ("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices"),
    ("Secret", "/api/v1/secrets"),
];

#[derive(Default)]
struct Inner {
    version: u64,
    /// Kind -> `namespace/name` -> object.
    objects: HashMap<&'static str, BTreeMap<String, Value>>,
    watchers: Vec<(&'static str, mpsc::UnboundedSender<Bytes>)>,
    lists: HashMap<&'static str, usize>,
    watches: HashMap<&'static str, usize>,
    /// Kinds answered 403 Forbidden (a ClusterRole that lacks them).
    forbidden: Vec<&'static str>,
}

#[derive(Default)]
pub struct FakeApi {
    inner: Mutex<Inner>,
}

fn kind_of(value: &Value) -> Option<&'static str> {
    let kind = value.get("kind")?.as_str()?;
    RESOURCES.iter().find(|(k, _)| *k == kind).map(|(k, _)| *k)
}

fn key_of(value: &Value) -> String {
    let meta = &value["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("")
    )
}

impl FakeApi {
    pub fn new() -> Arc<FakeApi> {
        Arc::new(FakeApi::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or changes every object of a multi-document YAML manifest.
    pub fn apply_yaml(&self, text: &str) {
        use serde::Deserialize;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).expect("YAML");
            self.apply(serde_json::to_value(value).expect("JSON"));
        }
    }

    /// Adds or changes one object; open watches of its kind see ADDED or MODIFIED.
    pub fn apply(&self, mut object: Value) {
        let Some(kind) = kind_of(&object) else { return };
        let mut inner = self.lock();
        inner.version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        let key = key_of(&object);
        let old = inner
            .objects
            .entry(kind)
            .or_default()
            .insert(key, object.clone());
        let kind_of_event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        send(
            &mut inner,
            kind,
            json!({ "type": kind_of_event, "object": object }),
        );
    }

    /// Deletes an object; open watches see DELETED.
    pub fn delete(&self, kind: &'static str, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let removed = inner
            .objects
            .entry(kind)
            .or_default()
            .remove(&format!("{namespace}/{name}"));
        if let Some(object) = removed {
            send(
                &mut inner,
                kind,
                json!({ "type": "DELETED", "object": object }),
            );
        }
    }

    /// Deletes an object without telling the watches (only a relist shows it).
    pub fn delete_quietly(&self, kind: &'static str, namespace: &str, name: &str) {
        self.lock()
            .objects
            .entry(kind)
            .or_default()
            .remove(&format!("{namespace}/{name}"));
    }

    /// Ends every watch of `kind` with a 410 Gone (resource version too old), as an API
    /// server does after compaction.
    pub fn gone(&self, kind: &'static str) {
        let mut inner = self.lock();
        let event = json!({ "type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410 } });
        send(&mut inner, kind, event);
        inner.watchers.retain(|(k, _)| *k != kind);
    }

    /// Answers requests for `kind` with 403 Forbidden (`true`) or normally again.
    pub fn forbid(&self, kind: &'static str, forbidden: bool) {
        let mut inner = self.lock();
        inner.forbidden.retain(|k| *k != kind);
        if forbidden {
            inner.forbidden.push(kind);
        }
    }

    /// How many times `kind` was listed / watched.
    pub fn lists(&self, kind: &str) -> usize {
        self.lock().lists.get(kind).copied().unwrap_or(0)
    }

    pub fn watches(&self, kind: &str) -> usize {
        self.lock().watches.get(kind).copied().unwrap_or(0)
    }

    /// Answers one request: a list, a watch (a stream of events), or 404.
    pub fn answer(&self, uri: &http::Uri) -> http::Response<Body> {
        let Some((kind, _)) = RESOURCES.iter().find(|(_, path)| *path == uri.path()) else {
            return failure(404, "NotFound");
        };
        let watch = uri
            .query()
            .unwrap_or("")
            .split('&')
            .any(|p| p == "watch=true");
        let mut inner = self.lock();
        if inner.forbidden.contains(kind) {
            return failure(403, "Forbidden");
        }
        if watch {
            *inner.watches.entry(kind).or_default() += 1;
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            inner.watchers.push((kind, tx));
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            return response(200, StreamBody::new(stream).boxed_unsync());
        }
        *inner.lists.entry(kind).or_default() += 1;
        let items: Vec<Value> = inner
            .objects
            .get(kind)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        let list = json!({ "kind": format!("{kind}List"), "apiVersion": "v1",
            "metadata": { "resourceVersion": inner.version.to_string() }, "items": items });
        response(200, Full::new(Bytes::from(list.to_string())).boxed_unsync())
    }
}

fn send(inner: &mut Inner, kind: &'static str, event: Value) {
    let line = Bytes::from(format!("{event}\n"));
    inner
        .watchers
        .retain(|(k, tx)| *k != kind || tx.send(line.clone()).is_ok());
}

/// A `Status` object saying why, with its HTTP status.
fn failure(code: u16, reason: &str) -> http::Response<Body> {
    let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "message": reason, "code": code });
    response(
        code,
        Full::new(Bytes::from(status.to_string())).boxed_unsync(),
    )
}

fn response(status: u16, body: Body) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("response")
}

/// A kube-rs client whose requests the fake answers through `tower_test::mock`.
pub fn mock_client(api: Arc<FakeApi>) -> kube::Client {
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            send.send_response(api.answer(request.uri()));
        }
    });
    kube::Client::new(service, "default")
}

/// Serves the fake over HTTP/1.1 on a loopback port; returns its address.
pub async fn serve(api: Arc<FakeApi>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = api.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.answer(req.uri())) }
                });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// A KUBECONFIG file naming the fake at `addr`.
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\n"
    )
}
