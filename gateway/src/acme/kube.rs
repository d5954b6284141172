//! The ACME store in Kubernetes: what [`super::store::StateDir`] keeps in files, kept
//! in the API server so that every gateway replica shares it. [`KubeStore`] owns the
//! mapping and the optimistic-concurrency rules; the manager calls it like the state
//! directory:
//!
//! | what | local mode ([`super::store`]) | Kubernetes (here) |
//! |---|---|---|
//! | issued certificate | `secrets/<ns>.<secretName>.yaml` | `kubernetes.io/tls` Secret `secretName` in the Certificate's namespace: `tls.crt`, `tls.key`, optional `ca.crt`, cert-manager's annotations plus `isthmus.dev/issuer` and `isthmus.dev/acme-server` |
//! | account | `accounts/<issuer>.json` | the Secret of the issuer's `privateKeySecretRef` (an Issuer's namespace; for a ClusterIssuer the cluster-resource namespace, cert-manager's `--cluster-resource-namespace`, default `cert-manager`): the PKCS#8 PEM key under `privateKeySecretRef.key` (default `tls.key`), the account URL and ACME server as annotations |
//! | order lock | `flock` on `locks/<ns>.<secretName>.lock` | `coordination.k8s.io/v1` Lease `isthmus-acme-<secretName>` in the Secret's namespace, renewed in the background, cleared on drop |
//! | HTTP-01 tokens | the gateway's token map (`AcmeOptions::acme`) | ConfigMap `isthmus-acme-challenges` in the gateway namespace: token -> key authorization, read by every replica |
//!
//! Every replica answers every replica's HTTP-01 tokens: the ordering one puts its
//! tokens in its own map and publishes them ([`KubeStore::publish_token`]), and
//! [`KubeStore::sync_tokens`] (run by the manager) reads the ConfigMap every 500 ms
//! (one GET) and keeps the gateway's token map in step with it: tokens it lacks
//! are added, the ones it added are removed when they leave the ConfigMap, and the
//! process's own tokens are left to its orders. The ordering replica tells the CA
//! a challenge is ready only [`KubeStore::token_propagation`] (two polls) after
//! publishing it, so that whichever replica the CA reaches answers. Answer counts
//! stay per process: the orderer's log reports only the fetches it answered.
//!
//! Writes of whole objects (Secrets, Leases) carry the `resourceVersion` read, so a
//! concurrent writer makes the API server answer 409 Conflict: a Secret write then
//! reads again and retries once; a Lease write means another replica won. The token
//! ConfigMap is changed by JSON merge patches of single keys, which need no
//! `resourceVersion` and cannot lose another replica's tokens.
//!
//! A Lease held by another identity is taken over only when it has expired
//! (`renewTime + leaseDurationSeconds < now`, by this replica's clock: replicas'
//! clocks must agree to within the margin between the renewal period and the
//! duration, 20 s by default). Key material is never logged; errors name the object
//! (`Secret ns/name`, `Lease ns/name`) and the API server's status.
//!
//! The manager uses it through [`super::backend::Backend::Kube`]. Tested against a
//! fake API server (`gateway/tests/kube_store.rs`, and with a real pebble in
//! `gateway/tests/acme_kube.rs`); not yet run against a real cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::Client;
use base64::Engine as _;
use instant_acme::AccountCredentials;
use isthmus_engine::acme_challenge::ChallengeTokens;
use isthmus_model::certs::{AcmeOrder, IssuerId, IssuerKind};
use isthmus_model::resources::certmanager::AcmeIssuer;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::store::{inspect, StoredCert};

/// Annotations on an issued Secret (cert-manager's own, plus the ACME server), as
/// the state directory writes them.
pub const ANN_CERTIFICATE: &str = "cert-manager.io/certificate-name";
pub const ANN_ISSUER_NAME: &str = "cert-manager.io/issuer-name";
pub const ANN_ISSUER_KIND: &str = "cert-manager.io/issuer-kind";
pub const ANN_ISSUER: &str = "isthmus.dev/issuer";
pub const ANN_SERVER: &str = "isthmus.dev/acme-server";
/// Annotation on an account Secret: the account URL (instant-acme's account id).
pub const ANN_ACCOUNT: &str = "isthmus.dev/acme-account";
/// Label on the objects isthmus creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The ConfigMap holding the pending HTTP-01 tokens (token -> key authorization).
pub const CHALLENGES_CONFIGMAP: &str = "isthmus-acme-challenges";
/// How often [`KubeStore::sync_tokens`] reads the token ConfigMap by default.
pub const TOKEN_POLL: Duration = Duration::from_millis(500);
/// cert-manager's default `--cluster-resource-namespace`.
pub const DEFAULT_CLUSTER_RESOURCE_NAMESPACE: &str = "cert-manager";

const TLS_TYPE: &str = "kubernetes.io/tls";
const OPAQUE_TYPE: &str = "Opaque";

/// Why a Kubernetes store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeStoreError {
    /// The API server refused the request.
    #[error("{what}: the API server answered {code} {reason}: {message}{hint}")]
    Api {
        /// `Secret ns/name`, `Lease ns/name`, `ConfigMap ns/name`.
        what: String,
        code: u16,
        reason: String,
        message: String,
        hint: &'static str,
    },
    /// The API server could not be asked (connection, TLS, a response that is not
    /// JSON...).
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: ::kube::Error,
    },
    /// The object is there but cannot be used as it is.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl KubeStoreError {
    /// The HTTP status the API server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeStoreError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn api_err(what: &str, e: ::kube::Error) -> KubeStoreError {
    match e {
        ::kube::Error::Api(s) => {
            let hint = match s.code {
                403 => " (grant the gateway's ServiceAccount get, create, update and patch on it)",
                409 => " (another writer changed it at the same time)",
                _ => "",
            };
            KubeStoreError::Api {
                what: what.to_string(),
                code: s.code,
                reason: if s.reason.is_empty() {
                    "Failure".into()
                } else {
                    s.reason.clone()
                },
                message: s.message.clone(),
                hint,
            }
        }
        source => KubeStoreError::Client {
            what: what.to_string(),
            source,
        },
    }
}

fn is_code(e: &::kube::Error, code: u16) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == code)
}

/// How long a Lease lasts and how often its holder renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `leaseDurationSeconds` (whole seconds, at least 1).
    pub duration: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    /// 30 s, renewed every 10 s.
    fn default() -> LeaseTiming {
        LeaseTiming {
            duration: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
        }
    }
}

impl LeaseTiming {
    fn seconds(&self) -> i32 {
        let s = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(s.max(1)).unwrap_or(i32::MAX)
    }
}

/// The ACME store of a gateway replica in Kubernetes. Cheap to clone; clones share
/// the set of Leases held.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    identity: String,
    cluster_resource_namespace: String,
    challenge_namespace: String,
    lease: LeaseTiming,
    /// Leases (`ns/name`) held by a [`KubeLock`] of this store, or being released.
    held: Arc<Mutex<HashSet<String>>>,
    /// How often [`KubeStore::sync_tokens`] reads the token ConfigMap.
    token_poll: Duration,
    /// Tokens this store published (this process's own orders) and has not
    /// withdrawn yet: the token sync leaves them alone.
    published: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("identity", &self.identity)
            .field(
                "cluster_resource_namespace",
                &self.cluster_resource_namespace,
            )
            .field("challenge_namespace", &self.challenge_namespace)
            .field("lease", &self.lease)
            .field("token_poll", &self.token_poll)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    /// A store using `client`, holding Leases as `identity` (the pod name), with the
    /// account Secrets of ClusterIssuers in `cluster_resource_namespace`. The token
    /// ConfigMap lives in the client's default namespace (in a pod: its own) until
    /// [`KubeStore::with_challenge_namespace`] says otherwise.
    pub fn new(
        client: Client,
        identity: impl Into<String>,
        cluster_resource_namespace: impl Into<String>,
    ) -> KubeStore {
        let challenge_namespace = client.default_namespace().to_string();
        KubeStore {
            client,
            identity: identity.into(),
            cluster_resource_namespace: cluster_resource_namespace.into(),
            challenge_namespace,
            lease: LeaseTiming::default(),
            held: Arc::new(Mutex::new(HashSet::new())),
            token_poll: TOKEN_POLL,
            published: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Keep the token ConfigMap in `namespace` (the gateway's).
    pub fn with_challenge_namespace(mut self, namespace: impl Into<String>) -> KubeStore {
        self.challenge_namespace = namespace.into();
        self
    }

    pub fn with_lease_timing(mut self, timing: LeaseTiming) -> KubeStore {
        self.lease = timing;
        self
    }

    /// Read the token ConfigMap every `every` in [`KubeStore::sync_tokens`]
    /// (default [`TOKEN_POLL`]).
    pub fn with_token_poll(mut self, every: Duration) -> KubeStore {
        self.token_poll = every.max(Duration::from_millis(10));
        self
    }

    /// How long an ordering replica waits after publishing a token before it tells
    /// the CA the challenge is ready: two polls of the token sync, so that every
    /// replica answers it by then.
    pub fn token_propagation(&self) -> Duration {
        self.token_poll * 2
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn challenge_namespace(&self) -> &str {
        &self.challenge_namespace
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    // ---- issued certificates ----------------------------------------------------

    /// The certificate stored in `order`'s Secret, if there is one (a Secret that
    /// cannot be read as one is reported, and ordering again replaces it). As with
    /// the state directory, the result says which names, issuer and server it is
    /// for, and [`isthmus_model::certs::decide`] orders anew when they are not the
    /// order's.
    pub async fn load_issued(
        &self,
        order: &AcmeOrder,
    ) -> Result<Option<StoredCert>, KubeStoreError> {
        let what = order.secret_ref();
        let Some(secret) = self
            .secrets(&order.namespace)
            .get_opt(&order.secret_name)
            .await
            .map_err(|e| api_err(&what, e))?
        else {
            return Ok(None);
        };
        let invalid = |reason: String| KubeStoreError::Invalid {
            what: what.clone(),
            reason,
        };
        let data = secret.data.unwrap_or_default();
        let (Some(chain), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
            return Err(invalid("no tls.crt and tls.key".into()));
        };
        let ann = |k: &str| annotation(&secret.metadata, k).unwrap_or_default();
        let stored =
            inspect(&chain.0, &key.0, ann(ANN_ISSUER), ann(ANN_SERVER)).map_err(invalid)?;
        Ok(Some(stored))
    }

    /// Write the issued chain and key as `order`'s Secret; returns what was stored.
    pub async fn save_issued(
        &self,
        order: &AcmeOrder,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StoredCert, KubeStoreError> {
        self.save_issued_with_ca(order, chain_pem, key_pem, None)
            .await
    }

    /// [`KubeStore::save_issued`], with `ca.crt` set to `ca_pem` (removed when
    /// `None`, so a previous issuer's CA does not stay behind). Other data keys,
    /// labels and annotations of an existing Secret are kept.
    pub async fn save_issued_with_ca(
        &self,
        order: &AcmeOrder,
        chain_pem: &str,
        key_pem: &str,
        ca_pem: Option<&str>,
    ) -> Result<StoredCert, KubeStoreError> {
        let what = order.secret_ref();
        let stored = inspect(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            order.issuer.display(),
            order.acme.server.clone(),
        )
        .map_err(|reason| KubeStoreError::Invalid {
            what: what.clone(),
            reason: format!("the CA's certificate cannot serve: {reason}"),
        })?;
        let api = self.secrets(&order.namespace);
        upsert_secret(&api, &what, &order.namespace, &order.secret_name, |existing| {
            if let Some(s) = existing {
                let t = s.type_.as_deref().unwrap_or(OPAQUE_TYPE);
                if t != TLS_TYPE {
                    return Err(format!(
                        "exists with type {t}, and a Secret's type cannot change: delete it so that isthmus writes the {TLS_TYPE} Secret"
                    ));
                }
            }
            let mut secret = existing.cloned().unwrap_or_default();
            let meta = &mut secret.metadata;
            let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
            for (k, v) in issued_annotations(order) {
                annotations.insert(k.to_string(), v);
            }
            secret.type_ = Some(TLS_TYPE.into());
            secret.string_data = None;
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            data.insert("tls.crt".into(), ByteString(chain_pem.as_bytes().to_vec()));
            data.insert("tls.key".into(), ByteString(key_pem.as_bytes().to_vec()));
            match ca_pem {
                Some(ca) => {
                    data.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
                }
                None => {
                    data.remove("ca.crt");
                }
            }
            Ok(secret)
        })
        .await?;
        Ok(stored)
    }

    // ---- accounts ---------------------------------------------------------------

    /// Where `issuer`'s account key lives: `(namespace, Secret name, data key)`.
    pub fn account_secret(
        &self,
        issuer: &IssuerId,
        acme: &AcmeIssuer,
    ) -> Result<(String, String, String), KubeStoreError> {
        let namespace = match issuer.kind {
            IssuerKind::Issuer => issuer.namespace.clone(),
            IssuerKind::ClusterIssuer => self.cluster_resource_namespace.clone(),
        };
        let r = &acme.private_key_secret_ref;
        if r.name.is_empty() {
            return Err(KubeStoreError::Invalid {
                what: issuer.display(),
                reason: "spec.acme.privateKeySecretRef.name is empty: name the Secret that keeps the ACME account key".into(),
            });
        }
        let key = r
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "tls.key".into());
        Ok((namespace, r.name.clone(), key))
    }

    /// The account of `issuer` stored in its `privateKeySecretRef` Secret, if one was
    /// created on `acme.server` (an account belongs to one ACME server) and written
    /// by isthmus (a Secret without the account URL, such as cert-manager's, gives
    /// `None`).
    pub async fn load_account(
        &self,
        issuer: &IssuerId,
        acme: &AcmeIssuer,
    ) -> Result<Option<AccountCredentials>, KubeStoreError> {
        let (ns, name, key) = self.account_secret(issuer, acme)?;
        let what = format!("Secret {ns}/{name}");
        let Some(secret) = self
            .secrets(&ns)
            .get_opt(&name)
            .await
            .map_err(|e| api_err(&what, e))?
        else {
            return Ok(None);
        };
        let (Some(server), Some(id)) = (
            annotation(&secret.metadata, ANN_SERVER),
            annotation(&secret.metadata, ANN_ACCOUNT),
        ) else {
            return Ok(None);
        };
        if server != acme.server {
            return Ok(None);
        }
        let invalid = |reason: String| KubeStoreError::Invalid {
            what: what.clone(),
            reason,
        };
        let Some(pem) = secret.data.as_ref().and_then(|d| d.get(&key)) else {
            return Err(invalid(format!("no {key} (the ACME account key)")));
        };
        let der = match PrivateKeyDer::from_pem_slice(&pem.0) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => return Err(invalid(format!("{key} is not a PKCS#8 private key"))),
            Err(e) => return Err(invalid(format!("{key} is not a PEM private key ({e})"))),
        };
        // instant-acme's credentials are opaque; build them from their serialized
        // form (`key_pkcs8` is base64url DER).
        let json = serde_json::json!({
            "id": id,
            "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der.secret_pkcs8_der()),
            "directory": server,
        });
        serde_json::from_value(json)
            .map(Some)
            .map_err(|e| invalid(format!("not an ACME account ({e})")))
    }

    /// Store `credentials` of `issuer`'s account created on `acme.server` in its
    /// `privateKeySecretRef` Secret (created, or updated keeping its other keys). A
    /// key isthmus did not write (no account URL annotation) is not replaced.
    pub async fn save_account(
        &self,
        issuer: &IssuerId,
        acme: &AcmeIssuer,
        credentials: AccountCredentials,
    ) -> Result<(), KubeStoreError> {
        let (ns, name, key) = self.account_secret(issuer, acme)?;
        let what = format!("Secret {ns}/{name}");
        let id = serde_json::to_value(&credentials)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .ok_or_else(|| KubeStoreError::Invalid {
                what: what.clone(),
                reason: "the ACME account has no URL".into(),
            })?;
        let pem = pem_encode("PRIVATE KEY", credentials.private_key().secret_pkcs8_der());
        let api = self.secrets(&ns);
        upsert_secret(&api, &what, &ns, &name, |existing| {
            if let Some(s) = existing {
                let foreign_key = s.data.as_ref().is_some_and(|d| d.contains_key(&key))
                    && annotation(&s.metadata, ANN_ACCOUNT).is_none();
                if foreign_key {
                    return Err(format!(
                        "holds an account key isthmus did not write ({key}, perhaps cert-manager's); it is kept: point privateKeySecretRef of {} at another Secret or delete this one",
                        issuer.display()
                    ));
                }
            }
            let mut secret = existing.cloned().unwrap_or_else(|| Secret {
                type_: Some(OPAQUE_TYPE.into()),
                ..Secret::default()
            });
            let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(ANN_ISSUER.into(), issuer.display());
            annotations.insert(ANN_SERVER.into(), acme.server.clone());
            annotations.insert(ANN_ACCOUNT.into(), id.clone());
            secret.string_data = None;
            secret
                .data
                .get_or_insert_with(BTreeMap::new)
                .insert(key.clone(), ByteString(pem.clone().into_bytes()));
            Ok(secret)
        })
        .await
    }

    // ---- HTTP-01 tokens -----------------------------------------------------------

    fn challenges(&self) -> (Api<ConfigMap>, String) {
        (
            Api::namespaced(self.client.clone(), &self.challenge_namespace),
            format!(
                "ConfigMap {}/{CHALLENGES_CONFIGMAP}",
                self.challenge_namespace
            ),
        )
    }

    /// Publish `token`'s key authorization to every replica (the ConfigMap is
    /// created when missing; other tokens are left alone).
    pub async fn publish_token(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), KubeStoreError> {
        let (api, what) = self.challenges();
        if !valid_token(token) {
            return Err(KubeStoreError::Invalid {
                what,
                reason: format!("{token:?} is not an ACME token (base64url characters only)"),
            });
        }
        // Ours from now on (before the ConfigMap has it), so this process's token
        // sync never takes it for another replica's.
        lock(&self.published).insert(token.to_string());
        let result = self.publish(&api, &what, token, key_authorization).await;
        if result.is_err() {
            lock(&self.published).remove(token);
        }
        result
    }

    async fn publish(
        &self,
        api: &Api<ConfigMap>,
        what: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), KubeStoreError> {
        let patch = serde_json::json!({ "data": { token: key_authorization } });
        let pp = PatchParams::default();
        // Patch; when the ConfigMap is missing create it; when another replica
        // created it meanwhile, patch again.
        for _ in 0..2 {
            match api
                .patch(CHALLENGES_CONFIGMAP, &pp, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 404) => {}
                Err(e) => return Err(api_err(what, e)),
            }
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CHALLENGES_CONFIGMAP.into()),
                    namespace: Some(self.challenge_namespace.clone()),
                    labels: Some(managed_labels()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    token.to_string(),
                    key_authorization.to_string(),
                )])),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) => {}
                Err(e) => return Err(api_err(what, e)),
            }
        }
        Err(KubeStoreError::Invalid {
            what: what.to_string(),
            reason: "created and deleted by others while publishing a token".into(),
        })
    }

    /// Remove `token` (nothing to do when it or the ConfigMap is gone).
    pub async fn withdraw_token(&self, token: &str) -> Result<(), KubeStoreError> {
        let (api, what) = self.challenges();
        if !valid_token(token) {
            return Ok(());
        }
        let patch = serde_json::json!({ "data": { token: null } });
        let result = match api
            .patch(
                CHALLENGES_CONFIGMAP,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(api_err(&what, e)),
        };
        // Forgotten once the ConfigMap no longer has it (or could not be changed:
        // then replicas keep answering a token no CA asks for any more).
        lock(&self.published).remove(token);
        result
    }

    /// The tokens published by any replica: token -> key authorization.
    pub async fn tokens(&self) -> Result<BTreeMap<String, String>, KubeStoreError> {
        let (api, what) = self.challenges();
        let cm = api
            .get_opt(CHALLENGES_CONFIGMAP)
            .await
            .map_err(|e| api_err(&what, e))?;
        Ok(cm.and_then(|c| c.data).unwrap_or_default())
    }

    /// Keep `target` answering the HTTP-01 tokens other replicas publish: a task
    /// reads the token ConfigMap (one GET) every [`KubeStore::with_token_poll`]
    /// period, inserts the tokens `target` lacks and removes those it inserted once
    /// they leave the ConfigMap. Tokens this store published itself (its process's
    /// own orders, which insert them into their map) are never touched. When the
    /// ConfigMap cannot be read, what is answered stays as it is. Entries that are
    /// not a token and its key authorization (`token.thumbprint`) are ignored. The
    /// task stops, and the tokens it inserted are removed, when the returned guard
    /// drops. Call from a tokio runtime.
    pub fn sync_tokens(&self, target: Arc<ChallengeTokens>) -> TokenSync {
        TokenSync {
            task: tokio::spawn(sync_tokens(self.clone(), target)),
        }
    }

    // ---- order lock -------------------------------------------------------------

    /// The Lease that serializes orders for `order`'s Secret.
    pub fn lease_name(order: &AcmeOrder) -> String {
        format!("isthmus-acme-{}", order.secret_name)
    }

    /// Take the order lock of `order`'s Secret (its Lease), so that of the replicas
    /// only one orders; `None` while another identity holds it unexpired, while this
    /// store holds it already, or when another replica wins the race for it. Renewed
    /// in the background while the returned guard lives; released when it drops.
    pub async fn try_lock(&self, order: &AcmeOrder) -> Result<Option<KubeLock>, KubeStoreError> {
        let ns = order.namespace.clone();
        let name = KubeStore::lease_name(order);
        let key = format!("{ns}/{name}");
        let what = format!("Lease {key}");
        // Reserve the Lease in this process first, so two guards never share it.
        if !lock(&self.held).insert(key.clone()) {
            return Ok(None);
        }
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &ns);
        let result = self.acquire(&api, &ns, &name, &what).await;
        let lease = match result {
            Ok(Some(lease)) => lease,
            other => {
                lock(&self.held).remove(&key);
                return other.map(|_| None);
            }
        };
        let shared = Arc::new(LockShared {
            api,
            name,
            what,
            identity: self.identity.clone(),
            timing: self.lease,
            last: Mutex::new(lease),
            lost: AtomicBool::new(false),
            held: self.held.clone(),
            key,
        });
        let renewer = tokio::spawn(renew(shared.clone()));
        Ok(Some(KubeLock {
            shared,
            renewer,
            runtime: tokio::runtime::Handle::current(),
            released: false,
        }))
    }

    /// One attempt to hold the Lease: created when absent, taken when free, expired
    /// or already this identity's (a restarted pod of the same name).
    async fn acquire(
        &self,
        api: &Api<Lease>,
        ns: &str,
        name: &str,
        what: &str,
    ) -> Result<Option<Lease>, KubeStoreError> {
        let now = Timestamp::now();
        let me = &self.identity;
        let seconds = self.lease.seconds();
        let pp = PostParams::default();
        let Some(current) = api.get_opt(name).await.map_err(|e| api_err(what, e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(managed_labels()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&pp, &lease).await {
                Ok(l) => {
                    debug!("acme: {what} created, held by {me}");
                    Ok(Some(l))
                }
                Err(e) if is_code(&e, 409) => Ok(None),
                Err(e) => Err(api_err(what, e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(me.as_str());
        if holder.is_some() && !mine && !expired(&spec, now) {
            return Ok(None);
        }
        let mut next = current.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(match (&spec.acquire_time, mine) {
                (Some(t), true) => t.clone(),
                _ => MicroTime(now),
            }),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(holder.is_some() && !mine),
            ),
            ..spec
        });
        match api.replace(name, &pp, &next).await {
            Ok(l) => {
                match holder {
                    Some(h) if h != *me => info!("acme: {what} taken over from {h} (expired)"),
                    _ => debug!("acme: {what} taken by {me}"),
                }
                Ok(Some(l))
            }
            Err(e) if is_code(&e, 409) => Ok(None),
            Err(e) => Err(api_err(what, e)),
        }
    }
}

/// The task of [`KubeStore::sync_tokens`]; dropping it stops the task and removes
/// the tokens it inserted.
#[derive(Debug)]
pub struct TokenSync {
    task: JoinHandle<()>,
}

impl Drop for TokenSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tokens the sync inserted into its target (token -> key authorization);
/// removed from the target when dropped (the task was stopped).
struct Synced {
    target: Arc<ChallengeTokens>,
    tokens: HashMap<String, String>,
    /// Entries refused, reported once each.
    refused: HashSet<String>,
}

impl Drop for Synced {
    fn drop(&mut self) {
        for t in self.tokens.keys() {
            self.target.remove(t);
        }
    }
}

impl Synced {
    /// Make the target answer `published` (the ConfigMap's data) except `own`.
    fn apply(&mut self, published: &BTreeMap<String, String>, own: &HashSet<String>) {
        let target = &self.target;
        self.tokens.retain(|t, ka| {
            if own.contains(t) {
                // This process's order answers it now (its entry replaced ours).
                return false;
            }
            let keep = published.get(t) == Some(ka);
            if !keep {
                target.remove(t);
                debug!("acme: stopped answering HTTP-01 token {t} (withdrawn by its replica)");
            }
            keep
        });
        self.refused.retain(|t| published.contains_key(t));
        for (t, ka) in published.iter().take(MAX_SYNCED_TOKENS) {
            if own.contains(t) || self.tokens.contains_key(t) || self.refused.contains(t) {
                continue;
            }
            if !answerable(t, ka) {
                warn!(
                    "acme: ConfigMap {CHALLENGES_CONFIGMAP} holds {t:?}, which is not an ACME token and its key authorization; not answered"
                );
                self.refused.insert(t.clone());
                continue;
            }
            target.insert(t, ka);
            debug!("acme: answering HTTP-01 token {t} published by a replica");
            self.tokens.insert(t.clone(), ka.clone());
        }
    }
}

/// At most this many tokens of the ConfigMap are answered (an order has one per
/// name; a ConfigMap holds at most 1 MiB anyway).
const MAX_SYNCED_TOKENS: usize = 1000;

/// `key_authorization` is `token.thumbprint` (RFC 8555 §8.1), thumbprint base64url.
fn answerable(token: &str, key_authorization: &str) -> bool {
    valid_token(token)
        && key_authorization.len() <= 512
        && key_authorization
            .strip_prefix(token)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(valid_token)
}

async fn sync_tokens(store: KubeStore, target: Arc<ChallengeTokens>) {
    let what = format!(
        "ConfigMap {}/{CHALLENGES_CONFIGMAP}",
        store.challenge_namespace
    );
    let mut synced = Synced {
        target,
        tokens: HashMap::new(),
        refused: HashSet::new(),
    };
    let mut tick = tokio::time::interval(store.token_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match store.tokens().await {
            Ok(published) => {
                if std::mem::take(&mut failing) {
                    info!("acme: {what} is readable again; answering the replicas' HTTP-01 tokens");
                }
                synced.apply(&published, &lock(&store.published));
            }
            Err(e) => {
                if !failing {
                    warn!(
                        "acme: {e}; the HTTP-01 tokens of other replicas are not followed until it can be read (polling every {:?})",
                        store.token_poll
                    );
                }
                failing = true;
            }
        }
    }
}

/// Whether a Lease is past `renewTime + leaseDurationSeconds` at `now` (one without
/// a renewal time is).
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    renewed
        .0
        .as_microsecond()
        .saturating_add(duration * 1_000_000)
        < now.as_microsecond()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by a [`KubeLock`] and its renewal task.
struct LockShared {
    api: Api<Lease>,
    name: String,
    what: String,
    identity: String,
    timing: LeaseTiming,
    /// The Lease as last written by this holder (its `resourceVersion` included).
    last: Mutex<Lease>,
    lost: AtomicBool,
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

/// An order lock held (see [`KubeStore::try_lock`]). Renewed every
/// [`LeaseTiming::renew_every`]; dropping it stops the renewal and clears the
/// holder in the background (best effort: otherwise the Lease expires).
pub struct KubeLock {
    shared: Arc<LockShared>,
    renewer: JoinHandle<()>,
    runtime: tokio::runtime::Handle,
    released: bool,
}

impl std::fmt::Debug for KubeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLock")
            .field("lease", &self.shared.what)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl KubeLock {
    /// `Lease ns/name`.
    pub fn lease(&self) -> &str {
        &self.shared.what
    }

    /// Whether the Lease was lost (another identity holds it now, or it could not be
    /// renewed before it expired): the order should not write its result.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Release now and wait for it (dropping releases in the background).
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        release(self.shared.clone()).await;
    }
}

impl Drop for KubeLock {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            self.runtime.spawn(release(self.shared.clone()));
        }
    }
}

/// Renew the Lease every period until aborted or lost.
async fn renew(shared: Arc<LockShared>) {
    let mut tick = tokio::time::interval(shared.timing.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match renew_once(&shared).await {
            Ok(true) => {}
            Ok(false) => {
                shared.lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                let last = lock(&shared.last).clone();
                let spec = last.spec.unwrap_or_default();
                if expired(&spec, Timestamp::now()) {
                    warn!("acme: {e}; the Lease expired before it could be renewed");
                    shared.lost.store(true, Ordering::Relaxed);
                    return;
                }
                warn!(
                    "acme: {e}; renewing again in {:?}",
                    shared.timing.renew_every
                );
            }
        }
    }
}

/// Write a new `renewTime`; `false` when another identity holds the Lease now.
async fn renew_once(shared: &LockShared) -> Result<bool, KubeStoreError> {
    let pp = PostParams::default();
    let mut current = lock(&shared.last).clone();
    for attempt in 0..2 {
        let mut next = current.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(shared.identity.as_str()) {
            let h = spec.holder_identity.clone().unwrap_or_default();
            warn!("acme: {} lost to {h:?}", shared.what);
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match shared.api.replace(&shared.name, &pp, &next).await {
            Ok(l) => {
                *lock(&shared.last) = l;
                return Ok(true);
            }
            Err(e) if is_code(&e, 409) && attempt == 0 => {
                match shared.api.get_opt(&shared.name).await {
                    Ok(Some(l)) => current = l,
                    Ok(None) => {
                        warn!("acme: {} was deleted", shared.what);
                        return Ok(false);
                    }
                    Err(e) => return Err(api_err(&shared.what, e)),
                }
            }
            Err(e) => return Err(api_err(&shared.what, e)),
        }
    }
    Ok(false)
}

/// Clear the holder (unless the Lease was lost, or is another identity's now), then
/// forget the Lease.
async fn release(shared: Arc<LockShared>) {
    let pp = PostParams::default();
    let mut current = lock(&shared.last).clone();
    let attempts = if shared.lost.load(Ordering::Relaxed) {
        0
    } else {
        2
    };
    for attempt in 0..attempts {
        let mut next = current.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(shared.identity.as_str()) {
            break;
        }
        spec.holder_identity = None;
        match shared.api.replace(&shared.name, &pp, &next).await {
            Ok(_) => {
                debug!("acme: {} released", shared.what);
                break;
            }
            Err(e) if is_code(&e, 409) && attempt == 0 => {
                match shared.api.get_opt(&shared.name).await {
                    Ok(Some(l)) => current = l,
                    _ => break,
                }
            }
            Err(e) => {
                warn!(
                    "acme: {}; the Lease expires by itself",
                    api_err(&shared.what, e)
                );
                break;
            }
        }
    }
    lock(&shared.held).remove(&shared.key);
}

// ---- helpers ------------------------------------------------------------------------

/// Create the Secret `ns/name` from `build(None)`, or replace it by
/// `build(Some(current))` with the `resourceVersion` read; a 409 Conflict (another
/// writer between the read and the write) reads and writes once more.
async fn upsert_secret(
    api: &Api<Secret>,
    what: &str,
    ns: &str,
    name: &str,
    build: impl Fn(Option<&Secret>) -> Result<Secret, String>,
) -> Result<(), KubeStoreError> {
    let pp = PostParams::default();
    let invalid = |reason: String| KubeStoreError::Invalid {
        what: what.to_string(),
        reason,
    };
    let mut last_conflict = None;
    for _ in 0..2 {
        let current = api.get_opt(name).await.map_err(|e| api_err(what, e))?;
        let mut secret = build(current.as_ref()).map_err(invalid)?;
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some(ns.into());
        let written = match &current {
            None => {
                secret
                    .metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .extend(managed_labels());
                api.create(&pp, &secret).await
            }
            Some(c) => {
                secret.metadata.resource_version = c.metadata.resource_version.clone();
                api.replace(name, &pp, &secret).await
            }
        };
        match written {
            Ok(_) => return Ok(()),
            Err(e) if is_code(&e, 409) => last_conflict = Some(e),
            Err(e) => return Err(api_err(what, e)),
        }
    }
    Err(match last_conflict {
        Some(e) => api_err(what, e),
        None => invalid("not written".into()),
    })
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED_BY.to_string(), "isthmus".to_string())])
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

/// The annotations of an issued Secret (the state directory writes the same).
fn issued_annotations(order: &AcmeOrder) -> [(&'static str, String); 5] {
    let certificate_name = order
        .certificate
        .rsplit('/')
        .next()
        .unwrap_or(&order.certificate)
        .to_string();
    let kind = match order.issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    [
        (ANN_CERTIFICATE, certificate_name),
        (ANN_ISSUER_NAME, order.issuer.name.clone()),
        (ANN_ISSUER_KIND, kind.to_string()),
        (ANN_ISSUER, order.issuer.display()),
        (ANN_SERVER, order.acme.server.clone()),
    ]
}

/// A ConfigMap key that is an ACME token: base64url, non-empty.
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 253
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_is_renew_time_plus_duration() {
        let at = |s: i64| Timestamp::from_second(s).expect("timestamp");
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(30),
            renew_time: Some(MicroTime(at(1_000))),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, at(1_030)));
        assert!(expired(&spec, at(1_031)));
        assert!(expired(&LeaseSpec::default(), at(0)));
    }

    #[test]
    fn lease_seconds_round_up_to_at_least_one() {
        let t = |ms| LeaseTiming {
            duration: Duration::from_millis(ms),
            renew_every: Duration::from_millis(1),
        };
        assert_eq!(t(0).seconds(), 1);
        assert_eq!(t(1500).seconds(), 2);
        assert_eq!(LeaseTiming::default().seconds(), 30);
    }

    #[test]
    fn tokens_are_configmap_keys() {
        assert!(valid_token("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"));
        assert!(!valid_token(""));
        assert!(!valid_token("../x"));
        assert!(!valid_token("a.b"));
    }

    #[test]
    fn pem_lines_are_64_wide() {
        let pem = pem_encode("PRIVATE KEY", &[7u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PRIVATE KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END PRIVATE KEY-----"));
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes());
        assert!(der.is_ok(), "rustls reads it back");
    }
}
