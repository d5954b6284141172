//! The Kubernetes ACME store (`isthmus_gateway::acme::kube`) against a fake API
//! server: a real HTTP server on 127.0.0.1 that keeps objects in memory with the API
//! server's rules that matter here (404 NotFound, 409 AlreadyExists on create, 409
//! Conflict on a stale `resourceVersion`, 422 on an invalid `kubernetes.io/tls`
//! Secret or a changed Secret type, JSON merge patch), records every request, and
//! lets a test play a concurrent writer before a given request. No real API server
//! runs here: what a real cluster would add (RBAC, admission, watch) is not covered.
//! The fake is in `common/` (shared with `acme_kube.rs`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeApi, Recorded};
use isthmus_engine::acme_challenge::ChallengeTokens;
use isthmus_gateway::acme::kube::{KubeStore, LeaseTiming, CHALLENGES_CONFIGMAP};
use isthmus_model::certs::{acme_orders, decide, AcmeOrder, Decision};
use isthmus_model::load::load_str;
use isthmus_model::Store;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

const ISSUERS: &str = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: le}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: le-account}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: local, namespace: shop}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: local-account, key: account.pem}
    solvers: [{http01: {ingress: {class: istio}}}]
"#;

/// The orders of a ClusterIssuer Certificate (`istio-system/c`, Secret `c-tls`, names
/// a.test and b.test) and an Issuer one (`shop/s`, Secret `s-tls`, shop.test).
fn orders() -> (AcmeOrder, AcmeOrder) {
    let certs = r#"
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c, namespace: istio-system}
spec:
  secretName: c-tls
  issuerRef: {name: le, kind: ClusterIssuer}
  dnsNames: [a.test, b.test]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: s, namespace: shop}
spec:
  secretName: s-tls
  issuerRef: {name: local}
  dnsNames: [shop.test]
"#;
    let loaded = load_str("t.yaml", &format!("{ISSUERS}{certs}"));
    let (mut orders, diags) = acme_orders(&Store::new(loaded.resources));
    assert_eq!(diags, []);
    assert_eq!(orders.len(), 2);
    let s = orders.remove(1);
    (orders.remove(0), s)
}

fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

fn micro(t: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.6fZ", t).expect("format")
}

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const C_TLS: &str = "/api/v1/namespaces/istio-system/secrets/c-tls";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";
const C_LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/isthmus-acme-c-tls";

/// `(method, path, status)` of each request, for asserting the sequence.
fn calls(log: &[Recorded]) -> Vec<(String, String, u16)> {
    log.iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect()
}

fn call(method: &str, path: &str, status: u16) -> (String, String, u16) {
    (method.to_string(), path.to_string(), status)
}

/// Poll `f` until it is true, at most [`WAIT`].
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn issued_secret_is_created_then_replaced_with_the_resource_version_read() {
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();

    assert_eq!(store.load_issued(&o).await.expect("load"), None);
    assert_eq!(calls(&api.take_log()), [call("GET", C_TLS, 404)]);

    let (crt, key) = self_signed(&["a.test", "b.test"]);
    let saved = store.save_issued(&o, &crt, &key).await.expect("save");
    assert_eq!(saved.issued.names, ["a.test", "b.test"]);
    assert_eq!(saved.issued.issuer, "ClusterIssuer le");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [call("GET", C_TLS, 404), call("POST", SECRETS, 201)]
    );
    let body = log[1].body.as_ref().expect("body");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Secret");
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(body["metadata"]["name"], "c-tls");
    assert_eq!(body["metadata"]["namespace"], "istio-system");
    assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
    assert_eq!(
        body["metadata"]["annotations"],
        json!({
            "cert-manager.io/certificate-name": "c",
            "cert-manager.io/issuer-name": "le",
            "cert-manager.io/issuer-kind": "ClusterIssuer",
            "isthmus.dev/issuer": "ClusterIssuer le",
            "isthmus.dev/acme-server": "https://127.0.0.1:14000/dir",
        })
    );
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "isthmus"
    );
    assert_eq!(body["data"]["tls.crt"], b64(&crt));
    assert_eq!(body["data"]["tls.key"], b64(&key));
    assert!(body["data"].get("ca.crt").is_none());

    // What save_issued wrote, load_issued reads, and decide keeps.
    let loaded = store.load_issued(&o).await.expect("load").expect("stored");
    assert_eq!(loaded, saved);
    assert!(matches!(
        decide(&o, Some(&loaded.issued), now()),
        Decision::Keep { .. }
    ));
    api.take_log();

    // Someone else annotated the Secret and added a stale ca.crt: a renewal replaces
    // it with the resourceVersion read, keeps their annotation, drops ca.crt.
    api.update(C_TLS, |s| {
        s["metadata"]["annotations"]["team"] = json!("payments");
        s["data"]["ca.crt"] = json!(b64("stale"));
    });
    let rv = api.object(C_TLS).expect("secret")["metadata"]["resourceVersion"].clone();
    let (crt2, key2) = self_signed(&["a.test", "b.test"]);
    let renewed = store.save_issued(&o, &crt2, &key2).await.expect("save");
    assert_ne!(renewed.serial, saved.serial);
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [call("GET", C_TLS, 200), call("PUT", C_TLS, 200)]
    );
    let body = log[1].body.as_ref().expect("body");
    assert_eq!(body["metadata"]["resourceVersion"], rv);
    let stored = api.object(C_TLS).expect("secret");
    assert_eq!(stored["data"]["tls.crt"], b64(&crt2));
    assert_eq!(stored["metadata"]["annotations"]["team"], "payments");
    assert!(stored["data"].get("ca.crt").is_none(), "{stored}");
    assert_eq!(store.load_issued(&o).await.expect("load"), Some(renewed));

    // With a CA, ca.crt is written.
    store
        .save_issued_with_ca(&o, &crt2, &key2, Some("CA PEM"))
        .await
        .expect("save");
    assert_eq!(
        api.object(C_TLS).expect("secret")["data"]["ca.crt"],
        b64("CA PEM")
    );
}

#[tokio::test]
async fn a_conflicting_secret_write_is_retried_once_then_reported() {
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();
    let (crt, key) = self_signed(&["a.test", "b.test"]);
    store.save_issued(&o, &crt, &key).await.expect("save");
    api.take_log();

    // Another writer changes the Secret between our read and our write.
    api.before_next("PUT", C_TLS, |s| {
        s["metadata"]["annotations"]["other-writer"] = json!("was here");
    });
    store.save_issued(&o, &crt, &key).await.expect("retried");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [
            call("GET", C_TLS, 200),
            call("PUT", C_TLS, 409),
            call("GET", C_TLS, 200),
            call("PUT", C_TLS, 200),
        ]
    );
    assert_ne!(
        log[1].body.as_ref().expect("body")["metadata"]["resourceVersion"],
        log[3].body.as_ref().expect("body")["metadata"]["resourceVersion"],
        "the retry carries the new resourceVersion"
    );
    assert_eq!(
        api.object(C_TLS).expect("secret")["metadata"]["annotations"]["other-writer"],
        "was here",
        "the retry is built from the fresh read"
    );

    // Twice in a row: reported, naming the Secret and the status.
    api.before_next("PUT", C_TLS, |_| {});
    api.before_next("PUT", C_TLS, |_| {});
    let e = store
        .save_issued(&o, &crt, &key)
        .await
        .expect_err("conflict");
    assert_eq!(e.status(), Some(409));
    let text = e.to_string();
    assert!(
        text.starts_with("Secret istio-system/c-tls: the API server answered 409 Conflict"),
        "{text}"
    );
    assert_eq!(api.take_log().len(), 4, "one retry, no more");

    // Created by another replica between our 404 and our create: replaced.
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (crt_b, key_b) = self_signed(&["a.test", "b.test"]);
    let (crt_c, key_c) = self_signed(&["a.test", "b.test"]);
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "c-tls", "namespace": "istio-system"},
        "data": {"tls.crt": b64(&crt_b), "tls.key": b64(&key_b)},
    });
    api.before_next_create("POST", SECRETS, theirs);
    store.save_issued(&o, &crt_c, &key_c).await.expect("save");
    assert_eq!(
        calls(&api.take_log()),
        [
            call("GET", C_TLS, 404),
            call("POST", SECRETS, 409),
            call("GET", C_TLS, 200),
            call("PUT", C_TLS, 200),
        ]
    );
    assert_eq!(
        api.object(C_TLS).expect("secret")["data"]["tls.crt"],
        b64(&crt_c)
    );
}

#[tokio::test]
async fn load_issued_reports_what_is_stored_so_other_names_or_issuers_are_ordered_again() {
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();

    // A certificate for other names.
    let (crt, key) = self_signed(&["x.test"]);
    store.save_issued(&o, &crt, &key).await.expect("save");
    let s = store.load_issued(&o).await.expect("load").expect("stored");
    assert_eq!(s.issued.names, ["x.test"]);
    assert_eq!(
        decide(&o, Some(&s.issued), now()),
        Decision::Order("the stored certificate is for other names")
    );

    // The right names, from another issuer (a Secret written by cert-manager or by
    // hand has none of isthmus's annotations).
    let (crt, key) = self_signed(&["a.test", "b.test"]);
    api.seed(
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "c-tls", "namespace": "istio-system",
                         "annotations": {"cert-manager.io/issuer-name": "other"}},
            "data": {"tls.crt": b64(&crt), "tls.key": b64(&key)},
        }),
    );
    let s = store.load_issued(&o).await.expect("load").expect("stored");
    assert_eq!(s.issued.issuer, "");
    assert_eq!(
        decide(&o, Some(&s.issued), now()),
        Decision::Order("the stored certificate is from another issuer")
    );

    // A Secret of another type cannot be read as one, nor be replaced.
    api.seed(
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "c-tls", "namespace": "istio-system"},
            "data": {"password": b64("x")},
        }),
    );
    let e = store.load_issued(&o).await.expect_err("not tls");
    assert_eq!(
        e.to_string(),
        "Secret istio-system/c-tls: no tls.crt and tls.key"
    );
    api.take_log();
    let e = store.save_issued(&o, &crt, &key).await.expect_err("type");
    assert!(
        e.to_string()
            .starts_with("Secret istio-system/c-tls: exists with type Opaque"),
        "{e}"
    );
    assert_eq!(
        calls(&api.take_log()),
        [call("GET", C_TLS, 200)],
        "no write"
    );

    // A key that does not serve the certificate is refused before any request.
    let (_, other_key) = self_signed(&["a.test"]);
    let e = store
        .save_issued(&o, &crt, &other_key)
        .await
        .expect_err("key");
    assert!(
        e.to_string()
            .contains("the key does not serve the certificate"),
        "{e}"
    );
    assert!(api.take_log().is_empty());
}

#[tokio::test]
async fn api_errors_and_an_unreachable_server_name_the_resource() {
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();
    api.fail_next(
        "GET",
        C_TLS,
        403,
        "Forbidden",
        "secrets \"c-tls\" is forbidden",
    );
    let e = store.load_issued(&o).await.expect_err("forbidden");
    assert_eq!(
        e.to_string(),
        "Secret istio-system/c-tls: the API server answered 403 Forbidden: secrets \"c-tls\" is forbidden (grant the gateway's ServiceAccount get, create, update and patch on it)"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let store = KubeStore::new(client, "gw-a", "cert-manager");
    let e = store.try_lock(&o).await.expect_err("unreachable");
    assert!(
        e.to_string()
            .starts_with("Lease istio-system/isthmus-acme-c-tls: "),
        "{e}"
    );
    assert_eq!(e.status(), None);
}

fn fast() -> LeaseTiming {
    LeaseTiming {
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(100),
    }
}

fn lease_puts(log: &[Recorded]) -> Vec<&Recorded> {
    log.iter()
        .filter(|r| r.method == "PUT" && r.path == C_LEASE)
        .collect()
}

#[tokio::test]
async fn a_lease_is_created_when_absent_renewed_while_held_and_released_on_drop() {
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager").with_lease_timing(fast());
    let b = KubeStore::new(api.client(), "gw-b", "cert-manager").with_lease_timing(fast());
    let (o, _) = orders();

    let before = now();
    let held = a.try_lock(&o).await.expect("lock").expect("acquired");
    assert_eq!(held.lease(), "Lease istio-system/isthmus-acme-c-tls");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [call("GET", C_LEASE, 404), call("POST", LEASES, 201)]
    );
    let body = log[1].body.as_ref().expect("body");
    assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["name"], "isthmus-acme-c-tls");
    let spec = &body["spec"];
    assert_eq!(spec["holderIdentity"], "gw-a");
    assert_eq!(spec["leaseDurationSeconds"], 2);
    assert_eq!(spec["leaseTransitions"], 0);
    let renew: Timestamp = spec["renewTime"]
        .as_str()
        .expect("renewTime")
        .parse()
        .expect("time");
    assert!(renew.as_second() >= before - 1 && renew.as_second() <= now() + 1);
    assert_eq!(spec["acquireTime"], spec["renewTime"]);

    // Not twice from one store (no request needed), not by another identity while
    // it is held: a GET and no write.
    assert!(a.try_lock(&o).await.expect("lock").is_none());
    assert!(api.take_log().is_empty());
    assert!(b.try_lock(&o).await.expect("lock").is_none());
    assert_eq!(calls(&api.take_log()), [call("GET", C_LEASE, 200)]);

    // Renewed in the background: PUTs with the resourceVersion of the last write and
    // a later renewTime each.
    let mut renewals = Vec::new();
    eventually("three renewals", || {
        renewals.extend(api.take_log());
        lease_puts(&renewals).len() >= 3
    })
    .await;
    let puts = lease_puts(&renewals);
    let mut last = renew;
    for p in &puts {
        assert_eq!(p.status, 200, "a renewal conflicted: {p:?}");
        let s = &p.body.as_ref().expect("body")["spec"];
        assert_eq!(s["holderIdentity"], "gw-a");
        let t: Timestamp = s["renewTime"]
            .as_str()
            .expect("renewTime")
            .parse()
            .expect("time");
        assert!(t > last, "renewTime moves on");
        last = t;
    }
    assert!(!held.is_lost());

    // Dropped: the holder is cleared in the background, renewals stop.
    drop(held);
    eventually("the release", || {
        api.object(C_LEASE).expect("lease")["spec"]
            .get("holderIdentity")
            .is_none()
    })
    .await;
    api.take_log();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        lease_puts(&api.take_log()).is_empty(),
        "no renewal after release"
    );

    // Free now: the other replica takes it without waiting for expiry.
    let held_b = b.try_lock(&o).await.expect("lock").expect("free");
    let lease = api.object(C_LEASE).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "gw-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 0, "nobody held it");
    held_b.release().await;
    assert!(api.object(C_LEASE).expect("lease")["spec"]
        .get("holderIdentity")
        .is_none());
    // And this store may take it again once its own guard is gone.
    assert!(a.try_lock(&o).await.expect("lock").is_some());
}

fn lease(holder: &str, renewed: Timestamp, seconds: i32, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "isthmus-acme-c-tls", "namespace": "istio-system"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "acquireTime": micro(renewed),
            "renewTime": micro(renewed),
            "leaseTransitions": transitions,
        },
    })
}

#[tokio::test]
async fn a_lease_held_by_another_is_taken_only_once_expired() {
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();

    // Renewed 20 s ago for 30 s: held.
    let ago = |s: i64| Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(s);
    api.seed(LEASES, lease("gw-other", ago(20), 30, 3));
    assert!(a.try_lock(&o).await.expect("lock").is_none());
    assert_eq!(calls(&api.take_log()), [call("GET", C_LEASE, 200)]);

    // Renewed 31 s ago for 30 s: expired, taken over with its resourceVersion.
    api.seed(LEASES, lease("gw-other", ago(31), 30, 3));
    let rv = api.object(C_LEASE).expect("lease")["metadata"]["resourceVersion"].clone();
    let held = a.try_lock(&o).await.expect("lock").expect("taken over");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [call("GET", C_LEASE, 200), call("PUT", C_LEASE, 200)]
    );
    let body = log[1].body.as_ref().expect("body");
    assert_eq!(body["metadata"]["resourceVersion"], rv);
    assert_eq!(body["spec"]["holderIdentity"], "gw-a");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert_eq!(body["spec"]["leaseDurationSeconds"], 30);
    let acquired: Timestamp = body["spec"]["acquireTime"]
        .as_str()
        .expect("t")
        .parse()
        .expect("time");
    assert!(acquired > ago(5), "a new acquireTime");
    held.release().await;

    // A lease this identity held before a restart is its own again at once.
    api.seed(LEASES, lease("gw-a", ago(1), 30, 7));
    let held = a.try_lock(&o).await.expect("lock").expect("mine");
    assert_eq!(
        api.object(C_LEASE).expect("lease")["spec"]["leaseTransitions"],
        7
    );
    held.release().await;
}

#[tokio::test]
async fn a_conflict_means_another_replica_won_the_lease() {
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let (o, _) = orders();
    let long_ago = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600);

    // Expired; a faster replica takes it between our read and our write.
    api.seed(LEASES, lease("gw-other", long_ago, 30, 0));
    api.before_next("PUT", C_LEASE, |l| {
        l["spec"]["holderIdentity"] = json!("gw-fast");
        l["spec"]["renewTime"] = json!(micro(Timestamp::now()));
    });
    assert!(a.try_lock(&o).await.expect("not an error").is_none());
    assert_eq!(
        calls(&api.take_log()),
        [call("GET", C_LEASE, 200), call("PUT", C_LEASE, 409)]
    );
    assert_eq!(
        api.object(C_LEASE).expect("lease")["spec"]["holderIdentity"],
        "gw-fast"
    );

    // Absent; created by a faster replica between our 404 and our create.
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager");
    api.before_next_create("POST", LEASES, lease("gw-fast", Timestamp::now(), 30, 0));
    assert!(a.try_lock(&o).await.expect("not an error").is_none());
    assert_eq!(
        calls(&api.take_log()),
        [call("GET", C_LEASE, 404), call("POST", LEASES, 409)]
    );
    // Not held by this store after losing: it may try again.
    api.seed(LEASES, lease("", long_ago, 30, 0));
    assert!(a.try_lock(&o).await.expect("lock").is_some());
}

#[tokio::test]
async fn of_replicas_racing_for_a_lease_exactly_one_wins() {
    let api = FakeApi::start().await;
    let (o, _) = orders();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = KubeStore::new(api.client(), format!("gw-{i}"), "cert-manager");
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            let got = store.try_lock(&o).await.expect("lock");
            // Keep the winner's guard until every racer has answered.
            tokio::time::sleep(Duration::from_millis(300)).await;
            got.map(|g| (i, g))
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(w) = t.await.expect("task") {
            winners.push(w);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let holder = format!("gw-{}", winners[0].0);
    assert_eq!(
        api.object(C_LEASE).expect("lease")["spec"]["holderIdentity"],
        holder
    );
}

#[tokio::test]
async fn a_lease_taken_while_held_is_reported_lost_and_not_cleared() {
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager").with_lease_timing(fast());
    let (o, _) = orders();
    let held = a.try_lock(&o).await.expect("lock").expect("acquired");
    api.update(C_LEASE, |l| l["spec"]["holderIdentity"] = json!("gw-thief"));
    eventually("the loss", || held.is_lost()).await;
    let log = api.take_log();
    let puts = lease_puts(&log);
    assert_eq!(
        puts.last().map(|p| p.status),
        Some(409),
        "{:?}",
        calls(&log)
    );
    assert_eq!(log.last().map(|r| r.method.as_str()), Some("GET"));
    held.release().await;
    assert!(
        lease_puts(&api.take_log()).is_empty(),
        "nothing written once lost"
    );
    assert_eq!(
        api.object(C_LEASE).expect("lease")["spec"]["holderIdentity"],
        "gw-thief"
    );
}

#[tokio::test]
async fn the_account_key_lives_in_the_issuers_private_key_secret() {
    let api = FakeApi::start().await;
    let store = KubeStore::new(api.client(), "gw-a", "isthmus-system");
    let (c, s) = orders();
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let key_pkcs8 = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der())
    };
    let creds: instant_acme::AccountCredentials = serde_json::from_value(json!({
        "id": "https://127.0.0.1:14000/my-account/1",
        "key_pkcs8": key_pkcs8,
        "directory": "https://127.0.0.1:14000/dir",
    }))
    .expect("credentials");
    let original = serde_json::to_value(&creds).expect("json");

    // ClusterIssuer: the cluster-resource namespace.
    let path = "/api/v1/namespaces/isthmus-system/secrets/le-account";
    assert!(store
        .load_account(&c.issuer, &c.acme)
        .await
        .expect("load")
        .is_none());
    store
        .save_account(&c.issuer, &c.acme, creds)
        .await
        .expect("save");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [
            call("GET", path, 404),
            call("GET", path, 404),
            call("POST", "/api/v1/namespaces/isthmus-system/secrets", 201),
        ]
    );
    let body = log[2].body.as_ref().expect("body");
    assert_eq!(body["type"], "Opaque");
    assert_eq!(
        body["metadata"]["annotations"]["isthmus.dev/acme-account"],
        "https://127.0.0.1:14000/my-account/1"
    );
    assert_eq!(
        body["metadata"]["annotations"]["isthmus.dev/acme-server"],
        "https://127.0.0.1:14000/dir"
    );
    let pem = {
        use base64::Engine as _;
        let raw = body["data"]["tls.key"].as_str().expect("tls.key");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .expect("b64"),
        )
        .expect("utf8")
    };
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );
    assert_eq!(
        pem,
        key.serialize_pem(),
        "the same key, as cert-manager reads it"
    );

    let back = store
        .load_account(&c.issuer, &c.acme)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(serde_json::to_value(&back).expect("json"), original);
    let mut elsewhere = c.acme.clone();
    elsewhere.server = "https://other.test/dir".into();
    assert!(store
        .load_account(&c.issuer, &elsewhere)
        .await
        .expect("load")
        .is_none());

    // Issuer: its own namespace, and the key named by privateKeySecretRef.key.
    api.take_log();
    store
        .save_account(&s.issuer, &s.acme, back)
        .await
        .expect("save");
    let secret = api
        .object("/api/v1/namespaces/shop/secrets/local-account")
        .expect("issuer's account Secret");
    assert!(secret["data"].get("account.pem").is_some(), "{secret}");
    assert!(store
        .load_account(&s.issuer, &s.acme)
        .await
        .expect("load")
        .is_some());

    // cert-manager's account Secret (a key, no account URL): not used, not replaced.
    api.seed(
        "/api/v1/namespaces/isthmus-system/secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "le-account", "namespace": "isthmus-system"},
            "data": {"tls.key": b64("-----BEGIN RSA PRIVATE KEY-----\n...")},
        }),
    );
    assert!(store
        .load_account(&c.issuer, &c.acme)
        .await
        .expect("load")
        .is_none());
    let creds: instant_acme::AccountCredentials =
        serde_json::from_value(original.clone()).expect("credentials");
    let e = store
        .save_account(&c.issuer, &c.acme, creds)
        .await
        .expect_err("kept");
    assert!(
        e.to_string().starts_with(
            "Secret isthmus-system/le-account: holds an account key isthmus did not write"
        ),
        "{e}"
    );
    assert_eq!(
        api.object(path).expect("secret")["data"]["tls.key"],
        b64("-----BEGIN RSA PRIVATE KEY-----\n...")
    );
}

#[tokio::test]
async fn challenge_tokens_are_shared_through_one_configmap() {
    let api = FakeApi::start().await;
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager");
    let b = KubeStore::new(api.client(), "gw-b", "cert-manager");
    assert_eq!(
        a.challenge_namespace(),
        "istio-system",
        "the client's namespace"
    );
    let cms = "/api/v1/namespaces/istio-system/configmaps";
    let cm = format!("{cms}/{CHALLENGES_CONFIGMAP}");
    assert!(b.tokens().await.expect("tokens").is_empty());
    api.take_log();

    a.publish_token("tok-1", "tok-1.thumb")
        .await
        .expect("publish");
    let log = api.take_log();
    assert_eq!(
        calls(&log),
        [call("PATCH", &cm, 404), call("POST", cms, 201)]
    );
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        log[1].body.as_ref().expect("body")["data"],
        json!({"tok-1": "tok-1.thumb"})
    );

    b.publish_token("tok-2", "tok-2.thumb")
        .await
        .expect("publish");
    let log = api.take_log();
    assert_eq!(calls(&log), [call("PATCH", &cm, 200)]);
    assert_eq!(
        log[0].body.as_ref().expect("body"),
        &json!({"data": {"tok-2": "tok-2.thumb"}}),
        "one key, no resourceVersion"
    );
    let both = BTreeMap::from([
        ("tok-1".to_string(), "tok-1.thumb".to_string()),
        ("tok-2".to_string(), "tok-2.thumb".to_string()),
    ]);
    assert_eq!(a.tokens().await.expect("tokens"), both);
    assert_eq!(b.tokens().await.expect("tokens"), both);

    a.withdraw_token("tok-1").await.expect("withdraw");
    let log = api.take_log();
    assert_eq!(
        log.last().expect("patch").body.as_ref(),
        Some(&json!({"data": {"tok-1": null}}))
    );
    assert_eq!(
        b.tokens().await.expect("tokens").keys().collect::<Vec<_>>(),
        ["tok-2"]
    );
    a.withdraw_token("tok-1")
        .await
        .expect("gone already is fine");

    // Not a token: refused without a request. Another namespace when told.
    api.take_log();
    assert!(a.publish_token("../x", "y").await.is_err());
    assert!(api.take_log().is_empty());
    let c = KubeStore::new(api.client(), "gw-c", "cert-manager").with_challenge_namespace("edge");
    c.publish_token("tok-3", "k").await.expect("publish");
    assert!(api
        .object(&format!(
            "/api/v1/namespaces/edge/configmaps/{CHALLENGES_CONFIGMAP}"
        ))
        .is_some());
}

/// `GET`s of the token ConfigMap in `log`.
fn configmap_reads(log: &[Recorded]) -> usize {
    let cm = format!("/api/v1/namespaces/istio-system/configmaps/{CHALLENGES_CONFIGMAP}");
    log.iter()
        .filter(|r| r.method == "GET" && r.path == cm)
        .count()
}

#[tokio::test]
async fn the_token_sync_answers_other_replicas_tokens_and_leaves_its_own_alone() {
    let api = FakeApi::start().await;
    let poll = Duration::from_millis(30);
    let a = KubeStore::new(api.client(), "gw-a", "cert-manager").with_token_poll(poll);
    let b = KubeStore::new(api.client(), "gw-b", "cert-manager").with_token_poll(poll);
    assert_eq!(b.token_propagation(), poll * 2);
    let map = Arc::new(ChallengeTokens::default());
    let sync = b.sync_tokens(map.clone());

    // Replica A's token: B answers it, then stops when A withdraws it.
    a.publish_token("tok-a", "tok-a.thumb")
        .await
        .expect("publish");
    eventually("B answering A's token", || {
        map.answer("tok-a").as_deref() == Some("tok-a.thumb")
    })
    .await;
    a.withdraw_token("tok-a").await.expect("withdraw");
    eventually("B no longer answering A's token", || map.is_empty()).await;

    // B's own token (its order put it in the map and published it): the sync
    // neither replaces it nor removes it, even when someone else deletes it from
    // the ConfigMap.
    let own = map.insert("tok-b", "tok-b.thumb");
    b.publish_token("tok-b", "tok-b.thumb")
        .await
        .expect("publish");
    let cm = format!("/api/v1/namespaces/istio-system/configmaps/{CHALLENGES_CONFIGMAP}");
    api.update(&cm, |o| {
        o["data"].as_object_mut().expect("data").remove("tok-b");
    });
    // Entries that are not a token and its key authorization are not answered.
    api.update(&cm, |o| {
        o["data"]["bad.token"] = json!("bad.token.thumb");
        o["data"]["tok-c"] = json!("other.thumb");
    });
    api.take_log();
    let mut reads = 0;
    eventually("three more polls", || {
        reads += configmap_reads(&api.take_log());
        reads >= 3
    })
    .await;
    assert_eq!(map.answer("tok-b").as_deref(), Some("tok-b.thumb"));
    assert_eq!(own.served_here(), 1, "still the order's own entry");
    assert_eq!(map.answer("bad.token"), None);
    assert_eq!(map.answer("tok-c"), None);
    map.remove("tok-b");

    // The API server failing keeps what is answered; stopping the sync removes it.
    a.publish_token("tok-d", "tok-d.thumb")
        .await
        .expect("publish");
    eventually("B answering tok-d", || map.answer("tok-d").is_some()).await;
    for _ in 0..3 {
        api.fail_next("GET", &cm, 500, "InternalError", "etcd is down");
    }
    api.take_log();
    let mut failed = 0;
    eventually("three failed polls", || {
        failed += api
            .take_log()
            .iter()
            .filter(|r| r.method == "GET" && r.status == 500)
            .count();
        failed >= 3
    })
    .await;
    assert!(map.answer("tok-d").is_some(), "kept while unreadable");
    drop(sync);
    eventually("tok-d removed when the sync stops", || map.is_empty()).await;
    // A read in flight when it stopped is let through first.
    tokio::time::sleep(poll).await;
    api.take_log();
    tokio::time::sleep(poll * 3).await;
    assert_eq!(configmap_reads(&api.take_log()), 0, "no polls once stopped");
}
