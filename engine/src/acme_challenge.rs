//! ACME HTTP-01 answers (RFC 8555 §8.3) on every plain-HTTP listener: the process-wide
//! map of pending challenge tokens ([`ChallengeTokens`], filled by the gateway's ACME
//! manager while an order waits for validation) and the check at the very start of
//! the request path ([`try_serve`]) that answers
//! `GET /.well-known/acme-challenge/<token>` with the token's key authorization, for
//! any Host, before routing and before an `httpsRedirect` 301. Unknown tokens fall
//! through to normal routing. One map per process, so every gateway serves every
//! pending token. The cost for other requests is a string comparison.
//!
//! TLS-ALPN-01 (RFC 8737) is answered by every HTTPS listener: [`AlpnChallenges`]
//! holds, per domain, the self-signed challenge certificate (with the
//! `acmeIdentifier` extension) the gateway's ACME manager made; a ClientHello that
//! offers only `acme-tls/1` for that domain completes its handshake with it and is
//! then closed (see `tls::SniResolver::handshake`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use rustls::ServerConfig;
use tracing::debug;

/// The path prefix of HTTP-01 challenge requests.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A pending challenge: the key authorization to answer with, and how often it was
/// fetched (the CA fetches it once per validation perspective).
#[derive(Debug)]
pub struct PendingChallenge {
    key_authorization: String,
    served: AtomicU64,
}

impl PendingChallenge {
    /// How many times the answer was sent.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Token -> pending challenge. Readers never lock; writers copy the (small) map.
#[derive(Debug, Default)]
pub struct ChallengeTokens {
    map: ArcSwap<HashMap<String, Arc<PendingChallenge>>>,
}

impl ChallengeTokens {
    /// The map every HTTP listener of this process answers from.
    pub fn global() -> &'static ChallengeTokens {
        static GLOBAL: OnceLock<ChallengeTokens> = OnceLock::new();
        GLOBAL.get_or_init(ChallengeTokens::default)
    }

    /// Answer `token` with `key_authorization` until [`ChallengeTokens::remove`].
    pub fn insert(&self, token: &str, key_authorization: &str) -> Arc<PendingChallenge> {
        let pending = Arc::new(PendingChallenge {
            key_authorization: key_authorization.to_string(),
            served: AtomicU64::new(0),
        });
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(token.to_string(), pending.clone());
            m
        });
        pending
    }

    pub fn remove(&self, token: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(token);
            m
        });
    }

    /// The key authorization for `token`, counted as served.
    pub fn answer(&self, token: &str) -> Option<String> {
        let map = self.map.load();
        let pending = map.get(token)?;
        pending.served.fetch_add(1, Ordering::Relaxed);
        Some(pending.key_authorization.clone())
    }

    /// Whether no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Domain -> the rustls configuration answering its TLS-ALPN-01 challenge
/// (certificate with the `acmeIdentifier` extension, ALPN `acme-tls/1` only).
#[derive(Default)]
pub struct AlpnChallenges {
    map: ArcSwap<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for AlpnChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpnChallenges")
            .field("domains", &self.map.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AlpnChallenges {
    /// The map every HTTPS listener of this process answers from.
    pub fn global() -> &'static AlpnChallenges {
        static GLOBAL: OnceLock<AlpnChallenges> = OnceLock::new();
        GLOBAL.get_or_init(AlpnChallenges::default)
    }

    /// Answer TLS-ALPN-01 handshakes for `domain` with this certificate (PEM, with
    /// the `acmeIdentifier` extension) and key (PEM) until
    /// [`AlpnChallenges::remove`]. Errors when the PEM does not parse or the key does
    /// not match.
    pub fn insert(&self, domain: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cred = isthmus_model::snapshot::TlsCredential {
            secret: format!("tls-alpn-01 challenge for {domain}"),
            cert_chain_pem: cert_pem.to_vec(),
            private_key_pem: key_pem.to_vec(),
        };
        let key = crate::tls::certified_key(&cred, &provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(crate::tls::Fixed(key)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let config = Arc::new(config);
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(domain.clone(), config.clone());
            m
        });
        Ok(())
    }

    pub fn remove(&self, domain: &str) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&domain);
            m
        });
    }

    /// The configuration answering `sni`'s challenge, if one is pending.
    pub fn config_for(&self, sni: &str) -> Option<Arc<ServerConfig>> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        self.map.load().get(&sni).cloned()
    }

    /// Whether no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }
}

/// Whether a ClientHello's ALPN list is a TLS-ALPN-01 validation: `acme-tls/1` and
/// nothing else (RFC 8737 §3).
pub fn is_tls_alpn_challenge<'a>(mut alpn: impl Iterator<Item = &'a [u8]>) -> bool {
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// The token of an HTTP-01 challenge request (`GET` or `HEAD` on a plain-HTTP
/// listener, path `/.well-known/acme-challenge/<token>`), else `None`.
fn challenge_token<'a>(scheme: &str, method: &Method, path: &'a str) -> Option<&'a str> {
    if scheme != "http" || !(method == Method::GET || method == Method::HEAD) {
        return None;
    }
    path.strip_prefix(CHALLENGE_PREFIX)
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

/// Answer a pending HTTP-01 challenge: `Ok(true)` when the response was sent,
/// `Ok(false)` when the request is something else (routing goes on).
pub async fn try_serve(session: &mut Session, scheme: &str) -> pingora::Result<bool> {
    let req = session.req_header();
    let Some(token) = challenge_token(scheme, &req.method, req.uri.path()) else {
        return Ok(false);
    };
    let Some(key_authorization) = ChallengeTokens::global().answer(token) else {
        return Ok(false);
    };
    debug!(token, "acme: answering an HTTP-01 challenge");
    let head_only = req.method == Method::HEAD;
    let mut resp = ResponseHeader::build(200, Some(2))?;
    resp.insert_header(header::CONTENT_TYPE, "application/octet-stream")?;
    resp.insert_header(header::CONTENT_LENGTH, key_authorization.len())?;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(key_authorization)), true)
            .await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_get_or_head_on_the_challenge_path() {
        let t = |scheme, method, path| challenge_token(scheme, &method, path);
        let path = "/.well-known/acme-challenge/abc-_123";
        assert_eq!(t("http", Method::GET, path), Some("abc-_123"));
        assert_eq!(t("http", Method::HEAD, path), Some("abc-_123"));
        assert_eq!(t("https", Method::GET, path), None);
        assert_eq!(t("http", Method::POST, path), None);
        assert_eq!(t("http", Method::GET, "/.well-known/acme-challenge/"), None);
        assert_eq!(
            t("http", Method::GET, "/.well-known/acme-challenge/a/b"),
            None
        );
        assert_eq!(t("http", Method::GET, "/"), None);
    }

    #[test]
    fn tokens_are_answered_while_pending_and_counted() {
        let tokens = ChallengeTokens::default();
        assert!(tokens.is_empty());
        let a = tokens.insert("a", "a.thumb");
        tokens.insert("b", "b.thumb");
        assert_eq!(tokens.answer("a").as_deref(), Some("a.thumb"));
        assert_eq!(tokens.answer("a").as_deref(), Some("a.thumb"));
        assert_eq!(tokens.answer("c"), None);
        assert_eq!(a.served(), 2);
        tokens.remove("a");
        assert_eq!(tokens.answer("a"), None);
        assert_eq!(tokens.answer("b").as_deref(), Some("b.thumb"));
        tokens.remove("b");
        assert!(tokens.is_empty());
    }
}
