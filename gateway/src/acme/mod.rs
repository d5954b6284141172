//! Certificates the gateway obtains itself over ACME (HTTP-01), for cert-manager
//! `Certificate`s whose `issuerRef` names an ACME `Issuer` / `ClusterIssuer`. The
//! [`AcmeManager`] follows the configuration store; each such Certificate gets a
//! worker that keeps its Secret issued: a stored certificate for the same names,
//! issuer and server that is not due for renewal is kept (a restart places no order);
//! otherwise it orders ([`order`]), writes the result to the state directory
//! ([`store`]) — where the controller picks it up as configuration, so the Gateway's
//! `credentialName` serves it — and sleeps until renewal. Failures are retried with
//! exponential backoff; a stored certificate is never removed, so a valid one keeps
//! serving. Progress is logged as `acme: ordering ...`, `acme: challenge served for
//! ...`, `acme: issued ns/secret for [names], expires ...`.

pub mod order;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::Account;
use isthmus_engine::ChallengeTokens;
use isthmus_model::certs::{acme_orders, decide, AcmeOrder, Decision};
use isthmus_model::{Level, Store};
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

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
    pub state: StateDir,
    /// Roots trusted for ACME servers besides the system's (`--acme-ca-root`), for
    /// issuers without their own `caBundle`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub retry: Backoff,
    pub poll: PollTiming,
}

impl AcmeOptions {
    pub fn new(state: StateDir) -> AcmeOptions {
        AcmeOptions {
            state,
            extra_roots: Vec::new(),
            retry: Backoff::default(),
            poll: PollTiming::default(),
        }
    }
}

/// Read a PEM file of root certificates (`--acme-ca-root`).
pub fn load_ca_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    order::parse_roots(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The running manager. Dropping it stops every worker (a pending order is
/// abandoned; its challenge tokens are withdrawn).
#[derive(Debug)]
pub struct AcmeManager {
    task: JoinHandle<()>,
}

impl AcmeManager {
    /// Follow `stores` (the configuration in effect) and keep every ACME
    /// Certificate's Secret issued. Call from a tokio runtime.
    pub fn start(stores: watch::Receiver<Arc<Store>>, opts: AcmeOptions) -> AcmeManager {
        let shared = Arc::new(Shared {
            opts,
            accounts: Mutex::new(HashMap::new()),
        });
        AcmeManager {
            task: tokio::spawn(follow(stores, shared)),
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
        let wanted: HashMap<String, AcmeOrder> = orders
            .into_iter()
            .map(|o| (o.certificate.clone(), o))
            .collect();
        // A Certificate that is gone or changed stops its worker (dropped: aborted).
        workers.retain(|k, w| wanted.get(k) == Some(&w.order));
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

/// Keep `order`'s Secret issued until the task is aborted.
async fn keep_issued(order: AcmeOrder, shared: Arc<Shared>) {
    let state = &shared.opts.state;
    let what = format!("{} for [{}]", order.secret_ref(), order.names.join(", "));
    let mut retry = shared.opts.retry.first;
    let mut announced = false;
    let mut waiting = false;
    loop {
        let stored = match state.load_issued(&order) {
            Ok(s) => s,
            Err(e) => {
                warn!(
                    "acme: {e}; ordering a new certificate for {}",
                    order.certificate
                );
                None
            }
        };
        let reason = match decide(&order, stored.as_ref().map(|s| &s.issued), now()) {
            Decision::Keep { renew_at } => {
                if !announced {
                    if let Some(s) = &stored {
                        info!(
                            "acme: {what} is stored (serial {}, expires {}); no order needed",
                            s.serial, s.expires
                        );
                    }
                    announced = true;
                }
                let wait = u64::try_from(renew_at.saturating_sub(now())).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(wait).min(MAX_SLEEP)).await;
                continue;
            }
            Decision::Order(reason) => reason,
        };
        announced = true;
        // Several gateways on one state directory: one orders, the others wait for
        // its result (written where they read it).
        let lock = match state.try_lock(&order) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                if !waiting {
                    info!("acme: another isthmus is ordering {what}; waiting for its result");
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
            if let Ok(Some(s)) = state.load_issued(&order) {
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
        let started = std::time::Instant::now();
        let result = issue(&order, &shared).await;
        drop(lock);
        match result {
            Ok(s) => {
                info!(
                    "acme: issued {}/{} for [{}], expires {} (serial {}, in {} ms)",
                    order.namespace,
                    order.secret_name,
                    order.names.join(", "),
                    s.expires,
                    s.serial,
                    started.elapsed().as_millis()
                );
                retry = shared.opts.retry.first;
            }
            Err(e) => {
                let serving = match &stored {
                    Some(s) if s.issued.not_after > now() => {
                        format!("the stored certificate keeps serving until {}", s.expires)
                    }
                    _ => format!("no certificate issued for {} yet", order.names.join(", ")),
                };
                error!(
                    "acme: order for {what} ({} {}) failed: {}; retrying in {}s; {serving}",
                    order.certificate,
                    order.origin,
                    with_causes(&e),
                    retry.as_secs_f32()
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(shared.opts.retry.max);
            }
        }
    }
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
    Store(#[from] StoreError),
}

/// One order for `order`, with the issuer's account (created once and kept), and
/// the result stored.
async fn issue(order: &AcmeOrder, shared: &Shared) -> Result<StoredCert, IssueError> {
    let mut fresh_account = false;
    loop {
        let account = account(order, shared, fresh_account).await?;
        let validated = |name: &str, served: u64| {
            info!("acme: challenge served for {name} ({served} fetches by the CA), validated");
        };
        match order::order_certificate(
            &account,
            order,
            ChallengeTokens::global(),
            shared.opts.poll,
            validated,
        )
        .await
        {
            Ok(issuance) => {
                return Ok(shared.opts.state.save_issued(
                    order,
                    &issuance.chain_pem,
                    &issuance.key_pem,
                )?)
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

/// The account `order`'s issuer uses: cached, else restored from the state
/// directory, else created (and stored). `fresh` replaces it with a new one.
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
    let state = &shared.opts.state;
    let http = || order::http_client(&order.acme, &shared.opts.extra_roots);
    let stored = if fresh {
        None
    } else {
        state.load_account(&order.issuer, &order.acme.server)?
    };
    let account = match stored {
        Some(credentials) => order::restore_account(http()?, credentials).await?,
        None => {
            let (account, credentials) = order::create_account(http()?, &order.acme).await?;
            state.save_account(&order.issuer, &order.acme.server, credentials)?;
            info!(
                "acme: account created on {} for {} (stored in {})",
                order.acme.server,
                order.issuer.display(),
                state.account_path(&order.issuer).display()
            );
            account
        }
    };
    accounts.insert(key, account.clone());
    Ok(account)
}
