//! The ACME manager with the Kubernetes backend: a real pebble issues, the
//! HTTP-01 challenge is answered by a real HTTP listener on the port pebble
//! validates (from the manager's `AcmeChallenges`), and the certificate, the
//! account and the order lock go to the fake API server of `common/` (a real HTTP
//! server on 127.0.0.1). A second manager on the same fake state places no order.
//! Two replicas at once: the one that does not order answers the CA, from the
//! tokens its sync reads from the challenge ConfigMap.

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::{FakeApi, Recorded};
use http_body_util::Full;
use hyper::{Request, Response};
use isthmus_engine::acme_challenge::{AcmeChallenges, ChallengeTokens};
use isthmus_gateway::acme::kube::{KubeStore, CHALLENGES_CONFIGMAP};
use isthmus_gateway::acme::{AcmeManager, AcmeOptions, StateDir};
use isthmus_model::load::load_str;
use isthmus_model::Store;
use isthmus_testkit::acme::{certificate, pebble_issuer, SECRET};
use isthmus_testkit::pebble::{verify_chain, Pebble};
use serde_json::{json, Value};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(25);

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";
const ACCOUNT: &str = "/api/v1/namespaces/cert-manager/secrets/pebble-account";

/// Answer `GET /.well-known/acme-challenge/TOKEN` on 127.0.0.1:`port` from
/// `tokens` (what the engine's HTTP listener answers first), counting the answers.
async fn serve_http01(
    port: u16,
    tokens: Arc<ChallengeTokens>,
    answered: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the HTTP-01 port");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (answered, tokens) = (answered.clone(), tokens.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (answered, tokens) = (answered.clone(), tokens.clone());
                    async move {
                        let answer = req
                            .uri()
                            .path()
                            .strip_prefix("/.well-known/acme-challenge/")
                            .and_then(|t| tokens.answer(t));
                        let mut resp = Response::new(Full::new(Bytes::from(
                            answer.clone().unwrap_or_default(),
                        )));
                        match answer {
                            Some(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            None => *resp.status_mut() = hyper::StatusCode::NOT_FOUND,
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// Poll `f` until it gives a value, at most [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data(obj: &Value, key: &str) -> String {
    let b64 = obj["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data[{key}] in {obj}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    String::from_utf8(bytes).expect("PEM text")
}

/// The public key (PEM) of a certificate or a private key, by `openssl`.
fn public_key(dir: &Path, name: &str, pem: &str, cert: bool) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    let mut cmd = Command::new("openssl");
    if cert {
        cmd.args(["x509", "-noout", "-pubkey", "-in"]);
    } else {
        cmd.args(["pkey", "-pubout", "-in"]);
    }
    let out = cmd.arg(&path).output().expect("run openssl");
    assert!(out.status.success(), "openssl on {name} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn creates<'a>(log: &'a [Recorded], collection: &str) -> Vec<(usize, &'a Recorded)> {
    log.iter()
        .enumerate()
        .filter(|(_, r)| r.method == "POST" && r.path == collection && r.status == 201)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_orders_into_kubernetes_once_and_a_restart_keeps_it() {
    let http_port = isthmus_testkit::free_ports(1)[0];
    let Some(mut pebble) = block_in_place(|| Pebble::start(http_port)) else {
        return;
    };
    // The maps the gateway's listeners and the manager share.
    let acme = AcmeChallenges::default();
    let _http01 = serve_http01(http_port, acme.http01.clone(), Arc::new(AtomicU64::new(0))).await;
    let yaml = pebble_issuer(&pebble, None) + &certificate(&["kube.acme.test"], "");
    let loaded = load_str("acme.yaml", &yaml);
    assert_eq!(loaded.diagnostics, [], "{yaml}");
    let (_tx, stores) = tokio::sync::watch::channel(Arc::new(Store::new(loaded.resources)));

    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(&tmp.path().join("state-a")).expect("state");
    let kube = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let manager = AcmeManager::start(stores.clone(), AcmeOptions::kube(kube, state, acme));

    let secret_path = format!("{SECRETS}/{SECRET}");
    let secret = eventually("the issued Secret", || api.object(&secret_path)).await;
    let log = api.take_log();

    // The order lock: a Lease for the Secret, held by this identity, created before
    // the Secret.
    let leases = creates(&log, LEASES);
    assert_eq!(leases.len(), 1, "{log:#?}");
    let (lease_at, lease) = leases[0];
    let body = lease.body.as_ref().expect("Lease body");
    assert_eq!(body["metadata"]["name"], format!("isthmus-acme-{SECRET}"));
    assert_eq!(body["spec"]["holderIdentity"], "gw-a");
    let secrets = creates(&log, SECRETS);
    assert_eq!(secrets.len(), 1, "{log:#?}");
    let (secret_at, created) = secrets[0];
    assert!(
        lease_at < secret_at,
        "the Lease is taken before the Secret is written"
    );
    assert_eq!(
        created.body.as_ref().expect("Secret body")["type"],
        "kubernetes.io/tls"
    );

    // The chain verifies against pebble's issuing root; the key is the leaf's.
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let (chain, key) = (data(&secret, "tls.crt"), data(&secret, "tls.key"));
    let root = block_in_place(|| pebble.issuing_root_file());
    verify_chain(&root, &chain).expect("the chain verifies against pebble's root");
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .expect("a leaf");
    assert_eq!(
        public_key(tmp.path(), "leaf.pem", leaf, true),
        public_key(tmp.path(), "key.pem", &key, false),
        "tls.key is the leaf's key"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["isthmus.dev/acme-server"],
        pebble.directory_url()
    );

    // The account: the issuer's privateKeySecretRef Secret in the cluster-resource
    // namespace, with the account URL.
    let account = api.object(ACCOUNT).expect("the account Secret");
    assert!(data(&account, "tls.key").contains("BEGIN PRIVATE KEY"));
    assert!(
        account["metadata"]["annotations"]["isthmus.dev/acme-account"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );

    // The HTTP-01 token was published to the challenge ConfigMap, and is withdrawn.
    let configmaps = "/api/v1/namespaces/istio-system/configmaps";
    assert_eq!(creates(&log, configmaps).len(), 1, "{log:#?}");
    let cm_path = format!("{configmaps}/{CHALLENGES_CONFIGMAP}");
    eventually("the token withdrawn", || {
        let cm = api.object(&cm_path)?;
        cm["data"]
            .as_object()
            .is_none_or(|d| d.is_empty())
            .then_some(())
    })
    .await;
    // The Lease is released.
    let lease_path = format!("{LEASES}/isthmus-acme-{SECRET}");
    eventually("the Lease released", || {
        let l = api.object(&lease_path)?;
        l["spec"]["holderIdentity"].is_null().then_some(())
    })
    .await;
    assert_eq!(block_in_place(|| pebble.orders()), 1);
    drop(manager);
    api.take_log();

    // Another replica (a fresh local state: no status, no files) keeps what the API
    // server holds: no Lease, no write, no order.
    let state_b = StateDir::open(&tmp.path().join("state-b")).expect("state");
    let status = state_b
        .root()
        .join(format!("status/istio-system.{SECRET}.yaml"));
    let kube_b = KubeStore::new(api.client(), "gw-b", "cert-manager");
    let _manager_b = AcmeManager::start(
        stores,
        AcmeOptions::kube(kube_b, state_b, AcmeChallenges::default()),
    );
    eventually("the second manager keeping the certificate", || {
        let text = std::fs::read_to_string(&status).ok()?;
        text.contains("is up to date").then_some(())
    })
    .await;
    let log = api.take_log();
    assert!(
        log.iter().all(|r| r.method == "GET"),
        "only reads: {log:#?}"
    );
    assert!(log.iter().any(|r| r.path == secret_path), "{log:#?}");
    assert_eq!(block_in_place(|| pebble.orders()), 1, "no second order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_that_does_not_order_answers_the_ca_from_the_configmap() {
    let http_port = isthmus_testkit::free_ports(1)[0];
    let Some(mut pebble) = block_in_place(|| Pebble::start(http_port)) else {
        return;
    };
    // Each replica's own maps (in production, those of its process's gateway). The
    // port pebble validates on answers from replica B's map only.
    let (acme_a, acme_b) = (AcmeChallenges::default(), AcmeChallenges::default());
    let answered = Arc::new(AtomicU64::new(0));
    let _http01 = serve_http01(http_port, acme_b.http01.clone(), answered.clone()).await;
    let yaml = pebble_issuer(&pebble, None) + &certificate(&["replicas.acme.test"], "");
    let loaded = load_str("acme.yaml", &yaml);
    assert_eq!(loaded.diagnostics, [], "{yaml}");
    let (_tx, stores) = tokio::sync::watch::channel(Arc::new(Store::new(loaded.resources)));

    // A holds the order lock (its unexpired Lease), so B waits for A's result.
    let api = FakeApi::start().await;
    let now = k8s_openapi::jiff::Timestamp::now();
    let renewed =
        k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.6fZ", now).expect("format");
    api.seed(
        LEASES,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("isthmus-acme-{SECRET}"), "namespace": "istio-system"},
            "spec": {
                "holderIdentity": "gw-a", "leaseDurationSeconds": 30,
                "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0,
            },
        }),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = |identity: &str, acme: &AcmeChallenges| {
        let state = StateDir::open(&tmp.path().join(identity)).expect("state");
        let kube = KubeStore::new(api.client(), identity, "cert-manager");
        AcmeOptions::kube(kube, state, acme.clone())
    };

    // B first, until it waits for A.
    let _manager_b = AcmeManager::start(stores.clone(), options("gw-b", &acme_b));
    let status_b = tmp
        .path()
        .join(format!("gw-b/status/istio-system.{SECRET}.yaml"));
    eventually("replica B waiting for A's order", || {
        let text = std::fs::read_to_string(&status_b).ok()?;
        text.contains("another isthmus").then_some(())
    })
    .await;
    let _manager_a = AcmeManager::start(stores, options("gw-a", &acme_a));

    let secret_path = format!("{SECRETS}/{SECRET}");
    let secret = eventually("the issued Secret", || api.object(&secret_path)).await;
    let (chain, _) = (data(&secret, "tls.crt"), data(&secret, "tls.key"));
    let root = block_in_place(|| pebble.issuing_root_file());
    verify_chain(&root, &chain).expect("the chain verifies against pebble's root");
    assert_eq!(block_in_place(|| pebble.orders()), 1, "one order");
    assert!(
        answered.load(Ordering::Relaxed) >= 1,
        "pebble's validation was answered from replica B's map"
    );

    // Only A held the Lease: B never wrote it.
    let log = api.take_log();
    let lease_writes: Vec<&Recorded> = log
        .iter()
        .filter(|r| r.path.starts_with(LEASES) && r.method != "GET")
        .collect();
    assert!(!lease_writes.is_empty(), "{log:#?}");
    for w in &lease_writes {
        let holder = &w.body.as_ref().expect("Lease body")["spec"]["holderIdentity"];
        assert!(
            *holder == "gw-a" || holder.is_null(),
            "{} by {holder}",
            w.method
        );
    }
    // The token left the ConfigMap, and B's sync stopped answering it; A's own
    // order removed it from A's map.
    eventually("B no longer answering the token", || {
        (acme_b.http01.is_empty() && acme_a.http01.is_empty()).then_some(())
    })
    .await;
    // B then keeps what A stored.
    eventually("replica B keeping A's certificate", || {
        let text = std::fs::read_to_string(&status_b).ok()?;
        text.contains("is up to date").then_some(())
    })
    .await;
    assert_eq!(block_in_place(|| pebble.orders()), 1, "no second order");
}
