//! Where the [`super::AcmeManager`] keeps what it issues: the local state directory
//! ([`StateDir`], files and a `flock` per Secret) or the Kubernetes API
//! ([`KubeStore`], Secrets and a Lease per Secret). [`Backend`] owns the choice and
//! gives both the same async calls: the issued certificate of an order, its order
//! lock, and the issuer's account. Status files and the shared challenge directory
//! are not here: they stay in the local state directory with either backend.

use instant_acme::AccountCredentials;
use isthmus_model::certs::{AcmeOrder, IssuerId};
use isthmus_model::resources::certmanager::AcmeIssuer;

use super::kube::{KubeLock, KubeStore, KubeStoreError};
use super::store::{OrderLock, StateDir, StoreError, StoredCert};

/// The storage of issued certificates, order locks and accounts.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Files in the state directory (`isthmus up`).
    Local(StateDir),
    /// Objects in the Kubernetes API server, shared by every replica.
    /// (Boxed: the client and its settings are much larger than a path.)
    Kube(Box<KubeStore>),
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Local(#[from] StoreError),
    #[error(transparent)]
    Kube(#[from] KubeStoreError),
}

/// An order lock held; released when dropped (see [`BackendLock::release`]).
#[derive(Debug)]
pub enum BackendLock {
    Local(OrderLock),
    Kube(KubeLock),
}

impl BackendLock {
    /// Whether the lock was lost while held (a Lease taken over or not renewed in
    /// time): the order's result should not be written. A file lock is never lost.
    pub fn is_lost(&self) -> bool {
        match self {
            BackendLock::Local(_) => false,
            BackendLock::Kube(l) => l.is_lost(),
        }
    }

    /// Release now (a Lease is cleared before this returns; a file lock is closed).
    pub async fn release(self) {
        match self {
            BackendLock::Local(l) => drop(l),
            BackendLock::Kube(l) => l.release().await,
        }
    }
}

impl Backend {
    /// The certificate stored for `order`'s Secret, if any.
    pub async fn load_issued(&self, order: &AcmeOrder) -> Result<Option<StoredCert>, BackendError> {
        match self {
            Backend::Local(s) => Ok(s.load_issued(order)?),
            Backend::Kube(k) => Ok(k.load_issued(order).await?),
        }
    }

    /// Write the issued chain and key as `order`'s Secret.
    pub async fn save_issued(
        &self,
        order: &AcmeOrder,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StoredCert, BackendError> {
        match self {
            Backend::Local(s) => Ok(s.save_issued(order, chain_pem, key_pem)?),
            Backend::Kube(k) => Ok(k.save_issued(order, chain_pem, key_pem).await?),
        }
    }

    /// Take the order lock of `order`'s Secret; `None` while another holds it.
    pub async fn try_lock(&self, order: &AcmeOrder) -> Result<Option<BackendLock>, BackendError> {
        match self {
            Backend::Local(s) => Ok(s.try_lock(order)?.map(BackendLock::Local)),
            Backend::Kube(k) => Ok(k.try_lock(order).await?.map(BackendLock::Kube)),
        }
    }

    /// The stored account of `issuer`, if it was created on `acme.server`.
    pub async fn load_account(
        &self,
        issuer: &IssuerId,
        acme: &AcmeIssuer,
    ) -> Result<Option<AccountCredentials>, BackendError> {
        match self {
            Backend::Local(s) => Ok(s.load_account(issuer, &acme.server)?),
            Backend::Kube(k) => Ok(k.load_account(issuer, acme).await?),
        }
    }

    /// Store the account of `issuer` created on `acme.server`.
    pub async fn save_account(
        &self,
        issuer: &IssuerId,
        acme: &AcmeIssuer,
        credentials: AccountCredentials,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Local(s) => Ok(s.save_account(issuer, &acme.server, credentials)?),
            Backend::Kube(k) => Ok(k.save_account(issuer, acme, credentials).await?),
        }
    }

    /// Where `issuer`'s account is stored, for messages: a file path, or
    /// `Secret ns/name`.
    pub fn account_location(&self, issuer: &IssuerId, acme: &AcmeIssuer) -> String {
        match self {
            Backend::Local(s) => s.account_path(issuer).display().to_string(),
            Backend::Kube(k) => match k.account_secret(issuer, acme) {
                Ok((ns, name, _)) => format!("Secret {ns}/{name}"),
                Err(e) => e.to_string(),
            },
        }
    }

    /// The Kubernetes store, when that is the backend.
    pub fn kube(&self) -> Option<&KubeStore> {
        match self {
            Backend::Kube(k) => Some(k.as_ref()),
            Backend::Local(_) => None,
        }
    }
}
