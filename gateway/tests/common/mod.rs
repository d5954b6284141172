//! The fake Kubernetes API server the integration tests share (`kube_store.rs`,
//! `acme_kube.rs`): a real HTTP server on 127.0.0.1 that keeps objects in memory with
//! the API server's rules that matter here (404 NotFound, 409 AlreadyExists on
//! create, 409 Conflict on a stale `resourceVersion`, 422 on an invalid
//! `kubernetes.io/tls` Secret or a changed Secret type, JSON merge patch), records
//! every request, and lets a test play a concurrent writer before a given request.

// Each test binary uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// One request as the API server saw it, and the status it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
}

type Hook = Box<dyn FnOnce(&mut Objects) + Send>;

#[derive(Default)]
pub struct Objects {
    /// By the object's path (`/api/v1/namespaces/ns/secrets/name`).
    map: BTreeMap<String, Value>,
    rv: u64,
}

impl Objects {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// Store `obj` under `collection` as a fresh write (a new resourceVersion).
    fn put(&mut self, collection: &str, mut obj: Value) -> Value {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.map.insert(format!("{collection}/{name}"), obj.clone());
        obj
    }

    fn update(&mut self, path: &str, f: impl FnOnce(&mut Value)) {
        let rv = self.next_rv();
        let obj = self.map.get_mut(path).expect("no such object to update");
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
}

#[derive(Default)]
struct State {
    objects: Objects,
    log: Vec<Recorded>,
    /// Run before the next request with this method and path (in order).
    hooks: Vec<(String, String, Hook)>,
    /// Answer the next request with this method and path with this status.
    faults: Vec<(String, String, u16, String, String)>,
}

pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(serve(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeApi { addr, state, task }
    }

    /// A client of this server whose default namespace is `istio-system`.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("url");
        let mut config = kube::Config::new(url);
        config.default_namespace = "istio-system".into();
        kube::Client::try_from(config).expect("client")
    }

    /// The requests since the last call.
    pub fn take_log(&self) -> Vec<Recorded> {
        std::mem::take(&mut lock(&self.state).log)
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        lock(&self.state).objects.map.get(path).cloned()
    }

    /// Store `obj` in `collection` (replacing any), as another client would.
    pub fn seed(&self, collection: &str, obj: Value) {
        lock(&self.state).objects.put(collection, obj);
    }

    /// Change the object at `path`, as another client would (new resourceVersion).
    pub fn update(&self, path: &str, f: impl FnOnce(&mut Value)) {
        lock(&self.state).objects.update(path, f);
    }

    /// Before the next `method path`, another client changes that object.
    pub fn before_next(
        &self,
        method: &str,
        path: &str,
        f: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        let p = path.to_string();
        lock(&self.state).hooks.push((
            method.into(),
            path.into(),
            Box::new(move |o: &mut Objects| o.update(&p, f)),
        ));
    }

    /// Before the next `method collection`, another client creates `obj`.
    pub fn before_next_create(&self, method: &str, collection: &str, obj: Value) {
        let c = collection.to_string();
        lock(&self.state).hooks.push((
            method.into(),
            collection.into(),
            Box::new(move |o: &mut Objects| {
                o.put(&c, obj);
            }),
        ));
    }

    /// Answer the next `method path` with an error status.
    pub fn fail_next(&self, method: &str, path: &str, code: u16, reason: &str, message: &str) {
        lock(&self.state).faults.push((
            method.into(),
            path.into(),
            code,
            reason.into(),
            message.into(),
        ));
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

async fn serve(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let (code, out) = {
        let mut st = lock(state);
        if let Some(i) = st
            .hooks
            .iter()
            .position(|(m, p, _)| *m == method && *p == path)
        {
            let (_, _, hook) = st.hooks.remove(i);
            hook(&mut st.objects);
        }
        let fault = st
            .faults
            .iter()
            .position(|(m, p, ..)| *m == method && *p == path);
        let (code, out) = match fault {
            Some(i) => {
                let (_, _, code, reason, message) = st.faults.remove(i);
                status(code, &reason, &message)
            }
            None => handle(
                &mut st.objects,
                &method,
                &path,
                content_type.as_deref(),
                body.as_ref(),
            ),
        };
        st.log.push(Recorded {
            method,
            path,
            content_type,
            body,
            status: code,
        });
        (code, out)
    };
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `(collection path, name)` of an object path, or `(collection, None)`.
fn split(path: &str) -> Option<(String, Option<String>, String)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let prefix = match segs.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    let rest = segs.get(prefix..)?;
    match rest {
        ["namespaces", _ns, plural] => Some((path.to_string(), None, plural.to_string())),
        ["namespaces", ns, plural, name] => Some((
            format!("/{}/namespaces/{ns}/{plural}", segs[..prefix].join("/")),
            Some(name.to_string()),
            plural.to_string(),
        )),
        _ => None,
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "leases" => "Lease",
        _ => "Object",
    }
}

/// The API server's validation of what is written (the parts used here).
fn invalid(obj: &Value, plural: &str) -> Option<String> {
    if plural != "secrets" {
        return None;
    }
    let empty = serde_json::Map::new();
    let data = obj["data"].as_object().unwrap_or(&empty);
    for (k, v) in data {
        let key_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        let value_ok = v.as_str().is_some_and(|s| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        });
        if !key_ok || !value_ok {
            return Some(format!("data[{k}]: Invalid value"));
        }
    }
    if obj["type"] == "kubernetes.io/tls" {
        for k in ["tls.crt", "tls.key"] {
            if !data.contains_key(k) {
                return Some(format!("data[{k}]: Required value"));
            }
        }
    }
    None
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn handle(
    objects: &mut Objects,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let Some((collection, name, plural)) = split(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let kind = kind_of(&plural);
    let not_found = |n: &str| status(404, "NotFound", &format!("{plural} \"{n}\" not found"));
    match (method, name) {
        ("GET", Some(n)) => match objects.map.get(path) {
            Some(o) => (200, o.clone()),
            None => not_found(&n),
        },
        ("POST", None) => {
            let Some(obj) = body.cloned() else {
                return status(400, "BadRequest", "no body");
            };
            let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name: Required value");
            };
            if obj["metadata"].get("resourceVersion").is_some() {
                return status(
                    500,
                    "InternalError",
                    "resourceVersion should not be set on objects to be created",
                );
            }
            if objects.map.contains_key(&format!("{collection}/{n}")) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{plural} \"{n}\" already exists"),
                );
            }
            if let Some(why) = invalid(&obj, &plural) {
                return status(422, "Invalid", &format!("{kind} \"{n}\" is invalid: {why}"));
            }
            (201, objects.put(&collection, obj))
        }
        ("PUT", Some(n)) => {
            let Some(mut obj) = body.cloned() else {
                return status(400, "BadRequest", "no body");
            };
            let Some(current) = objects.map.get(path).cloned() else {
                return not_found(&n);
            };
            if obj["metadata"]["name"].as_str() != Some(n.as_str()) {
                return status(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                );
            }
            let rv = &obj["metadata"]["resourceVersion"];
            // Without a resourceVersion a PUT is unconditional (as for core kinds).
            if !rv.is_null() && *rv != current["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    &format!("Operation cannot be fulfilled on {plural} \"{n}\": the object has been modified; please apply your changes to the latest version and try again"),
                );
            }
            if plural == "secrets" && obj["type"] != current["type"] {
                return status(
                    422,
                    "Invalid",
                    &format!("Secret \"{n}\" is invalid: type: Invalid value: field is immutable"),
                );
            }
            if let Some(why) = invalid(&obj, &plural) {
                return status(422, "Invalid", &format!("{kind} \"{n}\" is invalid: {why}"));
            }
            obj["metadata"]["resourceVersion"] = Value::Null;
            (200, objects.put(&collection, obj))
        }
        ("PATCH", Some(n)) => {
            if content_type != Some("application/merge-patch+json") {
                return status(415, "UnsupportedMediaType", "this test server only merges");
            }
            let Some(mut obj) = objects.map.get(path).cloned() else {
                return not_found(&n);
            };
            merge(&mut obj, body.unwrap_or(&Value::Null));
            (200, objects.put(&collection, obj))
        }
        _ => status(405, "MethodNotAllowed", "not supported by the fake"),
    }
}
