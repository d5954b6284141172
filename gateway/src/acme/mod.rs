//! Certificates the gateway obtains itself over ACME (HTTP-01 or TLS-ALPN-01), for cert-manager
//! `Certificate`s whose `issuerRef` names an ACME `Issuer` / `ClusterIssuer`, and for
//! the HTTPS servers of Gateways annotated `isthmus.dev/acme-issuer` (the orders of
//! `isthmus_model::certs::acme_orders`, one per Secret). The
//! [`AcmeManager`] follows the configuration store; each such order gets a
//! worker that keeps its Secret issued: a stored certificate for the same names,
//! issuer and server that is not due for renewal is kept (a restart places no order);
//! otherwise it orders ([`order`]), writes the result to its [`Backend`] — the
//! state directory ([`store`]), where the controller picks it up as configuration so
//! the Gateway's `credentialName` serves it, or the Kubernetes API ([`kube`]:
//! Secrets, the issuer's `privateKeySecretRef` Secret for the account, a Lease per
//! order as the lock; [`AcmeOptions::kube`]) — and sleeps until renewal. Failures are retried with
//! exponential backoff; a stored certificate is never removed, so a valid one keeps
//! serving. Progress is logged at INFO, so `isthmus up` shows it by default:
//! `acme: ordering ...`, `acme: challenge served for ...`, `acme: issued ns/secret for
//! [names], expires ... renewal at ...`, `acme: ... is stored ...; no order needed`,
//! and at ERROR `acme: order for ... failed: ...; retrying in Ns (at TIME, failed
//! attempts: N)`. Each change is also written as a cert-manager-shaped status
//! (`Ready` condition, validity, failures) to `STATE/status/` ([`status`]), which
//! `isthmus certs` prints; a status file is removed when its order leaves the
//! configuration.
//!
//! With either backend, status files and the challenge directory shared by replicas
//! (`STATE/challenges/`) stay in the local state directory. With the Kubernetes
//! backend, HTTP-01 tokens are also published to its challenge ConfigMap
//! ([`kube::KubeStore::publish_token`]), and every replica answers them: while the
//! manager runs, a task ([`kube::KubeStore::sync_tokens`]) keeps its HTTP-01 token
//! map (of [`AcmeOptions::acme`], the maps its gateway's listeners answer from) in
//! step with the ConfigMap (one GET every 500 ms; other replicas' tokens added and removed again,
//! this process's own left to its orders), and the ordering replica waits two polls
//! before telling the CA a challenge is ready. TLS-ALPN-01 challenges are not
//! shared through Kubernetes: with several replicas, use HTTP-01.

pub mod backend;
pub mod kube;
pub mod order;
pub mod status;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::Account;
use isthmus_engine::acme_challenge::AcmeChallenges;
use isthmus_model::certs::status::Reason;
use isthmus_model::certs::{acme_orders, decide, renewal_at, AcmeOrder, ChallengeKind, Decision};
use isthmus_model::der::format_utc;
use isthmus_model::{Level, Store};
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use backend::{Backend, BackendError, BackendLock};
pub use kube::KubeStore;
pub use order::{OrderError, PollTiming};
pub use store::{StateDir, StoreError, StoredCert};

/// Exponential backoff after a failed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 2 s, doubling, at most 1 h.
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        }
    }
}

/// How the manager runs.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// Where issued certificates, order locks and accounts are kept.
    pub backend: Backend,
    /// The local state directory: status files and the shared challenge directory
    /// (with either backend).
    pub state: StateDir,
    /// Roots trusted for ACME servers besides the system's (`--acme-ca-root`), for
    /// issuers without their own `caBundle`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub retry: Backoff,
    pub poll: PollTiming,
    /// The challenge maps the gateway's listeners answer from (the same value as
    /// its `GatewayOptions::acme`): orders put their HTTP-01 tokens and TLS-ALPN-01
    /// certificates in them and, with the Kubernetes backend, the token sync puts
    /// the other replicas' tokens in the HTTP-01 map. The manager shares them
    /// through `STATE/challenges` ([`AcmeChallenges::share_dir`]).
    pub acme: AcmeChallenges,
}

impl AcmeOptions {
    /// Everything in the local state directory `state`; challenges put in `acme`.
    pub fn new(state: StateDir, acme: AcmeChallenges) -> AcmeOptions {
        AcmeOptions {
            backend: Backend::Local(state.clone()),
            state,
            extra_roots: Vec::new(),
            retry: Backoff::default(),
            poll: PollTiming::default(),
            acme,
        }
    }

    /// Certificates, order locks and accounts in Kubernetes (`store`); status files
    /// and the shared challenge directory in the local `state`; challenges put in
    /// `acme`.
    pub fn kube(store: KubeStore, state: StateDir, acme: AcmeChallenges) -> AcmeOptions {
        AcmeOptions {
            backend: Backend::Kube(Box::new(store)),
            ..AcmeOptions::new(state, acme)
        }
    }
}

/// Read a PEM file of root certificates (`--acme-ca-root`).
pub fn load_ca_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    order::parse_roots(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The running manager. Dropping it stops every worker (a pending order is
/// abandoned; its challenge tokens are withdrawn) and the token sync (the other
/// replicas' tokens are no longer answered).
#[derive(Debug)]
pub struct AcmeManager {
    task: JoinHandle<()>,
    _token_sync: Option<kube::TokenSync>,
}

impl AcmeManager {
    /// Follow `stores` (the configuration in effect) and keep every ACME
    /// Certificate's Secret issued. Call from a tokio runtime.
    pub fn start(stores: watch::Receiver<Arc<Store>>, opts: AcmeOptions) -> AcmeManager {
        // Replicas on this state directory answer each other's challenges.
        opts.acme.share_dir(&opts.state.challenges_dir());
        // With Kubernetes, replicas answer each other's tokens from the ConfigMap.
        let token_sync = opts
            .backend
            .kube()
            .map(|k| k.sync_tokens(opts.acme.http01.clone()));
        let shared = Arc::new(Shared {
            opts,
            accounts: Mutex::new(HashMap::new()),
        });
        AcmeManager {
            task: tokio::spawn(follow(stores, shared)),
            _token_sync: token_sync,
        }
    }
}

impl Drop for AcmeManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    opts: AcmeOptions,
    /// Accounts in use, by issuer and issuer spec (a changed spec gets a fresh one).
    accounts: Mutex<HashMap<String, Account>>,
}

/// A worker task, aborted when dropped.
struct Worker {
    order: AcmeOrder,
    task: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(mut stores: watch::Receiver<Arc<Store>>, shared: Arc<Shared>) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut reported: Vec<String> = Vec::new();
    loop {
        let store = stores.borrow_and_update().clone();
        let (orders, diags) = acme_orders(&store);
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        if text != reported {
            for d in &diags {
                match d.level {
                    Level::Error => error!("acme: {d}"),
                    Level::Warning => warn!("acme: {d}"),
                    Level::Info => info!("acme: {d}"),
                }
            }
            reported = text;
        }
        // By Secret: one order per Secret (a Gateway's automatic certificates and the
        // Certificates share the key space).
        let wanted: HashMap<String, AcmeOrder> =
            orders.into_iter().map(|o| (o.secret_ref(), o)).collect();
        // A Certificate that is gone or changed stops its worker (dropped: aborted);
        // one that is gone also loses its status file.
        let gone: Vec<AcmeOrder> = workers
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k))
            .map(|(_, w)| w.order.clone())
            .collect();
        workers.retain(|k, w| wanted.get(k) == Some(&w.order));
        for o in &gone {
            status::remove_status(&shared.opts.state, o);
        }
        for (k, o) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(k) {
                let task = tokio::spawn(keep_issued(o.clone(), shared.clone()));
                slot.insert(Worker { order: o, task });
            }
        }
        if stores.changed().await.is_err() {
            // The configuration is fixed from now on: the workers keep going.
            std::future::pending::<()>().await;
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The longest single sleep while waiting for a renewal (the wall clock is read
/// again after each).
const MAX_SLEEP: Duration = Duration::from_secs(6 * 3600);

/// How often a gateway waiting for another one's order looks again.
const LOCK_POLL: Duration = Duration::from_secs(1);

/// Keep `order`'s Secret issued until the task is aborted. Each change of what it
/// does is logged at INFO (ERROR for a failure) and written to its status file.
async fn keep_issued(order: AcmeOrder, shared: Arc<Shared>) {
    let state = &shared.opts.state;
    let backend = &shared.opts.backend;
    let what = format!("{} for [{}]", order.secret_ref(), order.names.join(", "));
    let mut retry = shared.opts.retry.first;
    let mut announced = false;
    let mut waiting = false;
    let mut status = status::StatusFile::new(state, &order, now());
    loop {
        let stored = match backend.load_issued(&order).await {
            Ok(s) => s,
            Err(e) => {
                warn!(
                    "acme: {e}; ordering a new certificate for {}",
                    order.certificate
                );
                None
            }
        };
        // What serves the order's names now, for the status: (notBefore, notAfter,
        // renewalTime) of a stored, unexpired certificate for exactly these names.
        let serving = stored
            .as_ref()
            .filter(|s| serves(&order, s, now()))
            .map(|s| {
                let i = &s.issued;
                (
                    i.not_before,
                    i.not_after,
                    renewal_at(i.not_before, i.not_after, order.renew_before),
                )
            });
        status.progress.set_validity(serving);
        let reason = match decide(&order, stored.as_ref().map(|s| &s.issued), now()) {
            Decision::Keep { renew_at } => {
                // A replica that waited for another's order says what it now serves.
                let waited = std::mem::take(&mut waiting);
                if let Some(s) = &stored {
                    if !announced || waited {
                        info!(
                            "acme: {what} is stored (serial {}, expires {}, renewal at {}); no order needed",
                            s.serial,
                            s.expires,
                            format_utc(renew_at)
                        );
                    }
                    // Just issued: that message stays.
                    if !(status.progress.ready && status.progress.reason == Reason::Issued) {
                        let message = format!(
                            "certificate serial {} is up to date; renewal at {}",
                            s.serial,
                            format_utc(renew_at)
                        );
                        status.progress.set(true, Reason::Issued, message, now());
                    }
                    status.write();
                }
                announced = true;
                let wait = u64::try_from(renew_at.saturating_sub(now())).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(wait).min(MAX_SLEEP)).await;
                continue;
            }
            Decision::Order(reason) => reason,
        };
        announced = true;
        // Several gateways on one state directory: one orders, the others wait for
        // its result (written where they read it).
        let lock = match backend.try_lock(&order).await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                if !waiting {
                    info!("acme: another isthmus is ordering {what}; waiting for its result");
                    status.progress.set(
                        serving.is_some(),
                        Reason::Pending,
                        "another isthmus on this state directory is ordering it; waiting for its result",
                        now(),
                    );
                    status.write();
                    waiting = true;
                }
                tokio::time::sleep(LOCK_POLL).await;
                continue;
            }
            Err(e) => {
                warn!("acme: {e}; ordering without the order lock");
                None
            }
        };
        // Another gateway may have stored it while this one waited for the lock.
        if std::mem::take(&mut waiting) {
            if let Ok(Some(s)) = backend.load_issued(&order).await {
                if matches!(
                    decide(&order, Some(&s.issued), now()),
                    Decision::Keep { .. }
                ) {
                    announced = false;
                    continue;
                }
            }
        }
        info!(
            "acme: ordering {what} from {} at {} ({reason})",
            order.issuer.display(),
            order.acme.server
        );
        let after = match status.progress.failed_attempts {
            0 => String::new(),
            n => format!(" after {n} failed attempt(s)"),
        };
        status.progress.set(
            serving.is_some(),
            Reason::Ordering,
            format!(
                "ordering from {} at {} ({reason}){after}",
                order.issuer.display(),
                order.acme.server
            ),
            now(),
        );
        status.write();
        let started = std::time::Instant::now();
        let result = issue(&order, &shared, lock.as_ref()).await;
        if let Some(l) = lock {
            l.release().await;
        }
        match result {
            Ok(s) => {
                let i = &s.issued;
                let renew = renewal_at(i.not_before, i.not_after, order.renew_before);
                info!(
                    "acme: issued {}/{} for [{}], expires {} (serial {}, in {} ms); renewal at {}",
                    order.namespace,
                    order.secret_name,
                    order.names.join(", "),
                    s.expires,
                    s.serial,
                    started.elapsed().as_millis(),
                    format_utc(renew)
                );
                retry = shared.opts.retry.first;
                let p = &mut status.progress;
                p.set_validity(Some((i.not_before, i.not_after, renew)));
                p.last_failure = None;
                p.failed_attempts = 0;
                p.set(
                    true,
                    Reason::Issued,
                    format!(
                        "certificate serial {} issued in {} ms; renewal at {}",
                        s.serial,
                        started.elapsed().as_millis(),
                        format_utc(renew)
                    ),
                    now(),
                );
                status.write();
                // Stored: the next round finds it (and keeps it) without logging it.
                announced = true;
            }
            Err(e) => {
                let failed_at = now();
                let next =
                    failed_at.saturating_add(i64::try_from(retry.as_secs()).unwrap_or(i64::MAX));
                let serving_text = match &stored {
                    Some(s) if s.issued.not_after > failed_at => {
                        format!("the stored certificate keeps serving until {}", s.expires)
                    }
                    _ => format!("no certificate issued for {} yet", order.names.join(", ")),
                };
                let p = &mut status.progress;
                p.failed_attempts = p.failed_attempts.saturating_add(1);
                p.last_failure = Some(failed_at);
                let attempts = p.failed_attempts;
                error!(
                    "acme: order for {what} ({} {}) failed: {}; retrying in {}s (at {}, failed attempts: {attempts}); {serving_text}",
                    order.certificate,
                    order.origin,
                    with_causes(&e),
                    retry.as_secs_f32(),
                    format_utc(next)
                );
                p.set(
                    serving.is_some(),
                    Reason::Failed,
                    format!(
                        "order failed: {}; next attempt at {}; {serving_text}",
                        with_causes(&e),
                        format_utc(next)
                    ),
                    failed_at,
                );
                status.write();
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(shared.opts.retry.max);
            }
        }
    }
}

/// Whether `stored` serves `order` at `now`: unexpired and for exactly its names.
fn serves(order: &AcmeOrder, stored: &StoredCert, now: i64) -> bool {
    let mut want: Vec<&str> = order.names.iter().map(String::as_str).collect();
    let mut have: Vec<String> = stored
        .issued
        .names
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    want.sort_unstable();
    have.sort_unstable();
    have.dedup();
    stored.issued.not_after > now && want == have
}

/// `e` and its causes (`client error (Connect): tcp connect error: Connection
/// refused`), each once.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Why issuing failed.
#[derive(Debug, thiserror::Error)]
enum IssueError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Store(#[from] BackendError),
    #[error("the order lock ({0}) was lost while ordering; the certificate is not stored")]
    LockLost(String),
}

/// One order for `order`, with the issuer's account (created once and kept), and
/// the result stored.
async fn issue(
    order: &AcmeOrder,
    shared: &Shared,
    lock: Option<&BackendLock>,
) -> Result<StoredCert, IssueError> {
    let mut fresh_account = false;
    loop {
        let account = account(order, shared, fresh_account).await?;
        let validated = |name: &str, kind: ChallengeKind, served: u64| {
            match kind {
            ChallengeKind::Http01 if served == 0 => {
                info!("acme: challenge for {name} validated (answered by another replica)")
            }
            ChallengeKind::Http01 => {
                info!("acme: challenge served for {name} ({served} fetches by the CA), validated")
            }
            ChallengeKind::TlsAlpn01 => info!(
                "acme: challenge served for {name} (tls-alpn-01), validated ({served} handshakes by the CA)"
            ),
        }
        };
        let responders = order::Responders::new(&shared.opts.acme);
        match order::order_certificate(
            &account,
            order,
            responders.with_kube(shared.opts.backend.kube()),
            shared.opts.poll,
            validated,
        )
        .await
        {
            Ok(issuance) => {
                if let Some(BackendLock::Kube(l)) = lock.filter(|l| l.is_lost()) {
                    return Err(IssueError::LockLost(l.lease().to_string()));
                }
                return Ok(shared
                    .opts
                    .backend
                    .save_issued(order, &issuance.chain_pem, &issuance.key_pem)
                    .await?);
            }
            Err(e) if e.account_unknown() && !fresh_account => {
                warn!(
                    "acme: {} no longer knows the account of {}; creating a new one",
                    order.acme.server,
                    order.issuer.display()
                );
                fresh_account = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The account `order`'s issuer uses: cached, else restored from the backend, else
/// created (and stored). `fresh` replaces it with a new one.
async fn account(order: &AcmeOrder, shared: &Shared, fresh: bool) -> Result<Account, IssueError> {
    let key = format!(
        "{}\n{}",
        order.issuer.file_key(),
        serde_json::to_string(&order.acme).unwrap_or_default()
    );
    // Held while creating, so two Certificates of one issuer share one new account.
    let mut accounts = shared.accounts.lock().await;
    if !fresh {
        if let Some(a) = accounts.get(&key) {
            return Ok(a.clone());
        }
    }
    let backend = &shared.opts.backend;
    let http = || order::http_client(&order.acme, &shared.opts.extra_roots);
    let stored = if fresh {
        None
    } else {
        backend.load_account(&order.issuer, &order.acme).await?
    };
    let account = match stored {
        Some(credentials) => order::restore_account(http()?, credentials).await?,
        None => {
            let (account, credentials) = order::create_account(http()?, &order.acme).await?;
            backend
                .save_account(&order.issuer, &order.acme, credentials)
                .await?;
            info!(
                "acme: account created on {} for {} (stored in {})",
                order.acme.server,
                order.issuer.display(),
                backend.account_location(&order.issuer, &order.acme)
            );
            account
        }
    };
    accounts.insert(key, account.clone());
    Ok(account)
}
