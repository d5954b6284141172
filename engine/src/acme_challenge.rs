//! ACME challenge answers, for the gateways of a process and for every replica
//! sharing a state directory.
//!
//! The maps are owned by whoever starts the gateway and passed in explicitly
//! ([`AcmeChallenges`]: one value given to the gateway's listeners, through
//! `ListenerConfig::acme`, and to the ACME manager that fills it). A listener
//! given none answers no challenge: sidecar listeners never do.
//!
//! HTTP-01 (RFC 8555 §8.3) on a gateway's plain-HTTP listeners: the map of pending
//! challenge tokens ([`ChallengeTokens`], filled by the gateway's ACME manager while
//! an order waits for validation) and the check at the very start of the request
//! path ([`answer`]) that answers `GET /.well-known/acme-challenge/<token>` with
//! the token's key authorization, for any Host, before routing and before an
//! `httpsRedirect` 301. Unknown tokens fall through to normal routing. The cost for
//! other requests is a string comparison.
//!
//! TLS-ALPN-01 (RFC 8737) on a gateway's HTTPS listeners: [`AlpnChallenges`] holds,
//! per domain, the self-signed challenge certificate (with the `acmeIdentifier`
//! extension) the gateway's ACME manager made; a ClientHello that offers only
//! `acme-tls/1` for that domain completes its handshake with it and is then closed
//! (see `tls::SniResolver::handshake`; a resolver without a map refuses it).
//!
//! Replicas (several processes serving one configuration, one orders): with a shared
//! directory set ([`AcmeChallenges::share_dir`]), every challenge inserted is also
//! published there ([`ChallengeDir`]: `http-01/<token>`, `tls-alpn-01/<domain>.pem`,
//! mode 0600, names checked so nothing escapes the directory, removed with the
//! challenge), and a lookup that misses in memory reads it from there, so whichever
//! replica the CA reaches answers. The directory is read only for requests on the
//! challenge path and for `acme-tls/1` handshakes; other traffic never touches it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Method;
use rustls::ServerConfig;
use tracing::{debug, info, warn};

/// The path prefix of HTTP-01 challenge requests.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Why a challenge could not be set up or shared.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// The challenge certificate or key does not load.
    #[error("the TLS-ALPN-01 certificate for {domain}: {reason}")]
    Certificate { domain: String, reason: String },
    /// A token or domain that cannot name a file in the shared directory.
    #[error("{0:?} cannot be shared (not a valid ACME token or DNS name)")]
    InvalidName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A pending challenge's answer count: how often it was answered here, plus (when
/// shared) by other replicas.
#[derive(Debug)]
pub struct PendingChallenge {
    served: AtomicU64,
    /// `<name>.served` in the shared directory: one byte per answer by a replica.
    shared_count: Option<PathBuf>,
}

impl PendingChallenge {
    fn new(shared_count: Option<PathBuf>) -> Arc<PendingChallenge> {
        Arc::new(PendingChallenge {
            served: AtomicU64::new(0),
            shared_count,
        })
    }

    /// How many times the answer was sent (by this process and, when shared, by the
    /// replicas that read it from the shared directory).
    pub fn served(&self) -> u64 {
        let elsewhere = self
            .shared_count
            .as_ref()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        self.served.load(Ordering::Relaxed) + elsewhere
    }

    /// Answers sent by this process.
    pub fn served_here(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Pending challenges older than this in the shared directory are left-overs of a
/// process that was killed mid-order (an order gives up after minutes).
const STALE: Duration = Duration::from_secs(3600);

/// The shared challenge directory (e.g. `STATE/challenges`): `http-01/<token>` holds a
/// key authorization, `tls-alpn-01/<domain>.pem` a challenge certificate and its key
/// (PEM), each with a `<name>.served` answer counter next to it. Files are written
/// whole (temporary file, rename) with mode 0600 in directories of mode 0700.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeDir {
    root: PathBuf,
}

/// What is published: (subdirectory, file name) of a checked token or domain.
#[derive(Debug, Clone, Copy)]
enum Published<'a> {
    Token(&'a str),
    Domain(&'a str),
}

impl ChallengeDir {
    pub fn new(root: &Path) -> ChallengeDir {
        ChallengeDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file an HTTP-01 `token` is published in, `None` when it is not a valid
    /// token (the check every read and write of the directory goes through). Public
    /// for the fuzz targets.
    #[doc(hidden)]
    pub fn token_file(&self, token: &str) -> Option<PathBuf> {
        self.path(Published::Token(token))
    }

    /// The file a TLS-ALPN-01 `domain` is published in, `None` when it is not a
    /// valid domain. Public for the fuzz targets.
    #[doc(hidden)]
    pub fn domain_file(&self, domain: &str) -> Option<PathBuf> {
        self.path(Published::Domain(domain))
    }

    /// The file of a token or domain, `None` when the name is not one (so a request
    /// path cannot name a file outside the directory).
    fn path(&self, what: Published<'_>) -> Option<PathBuf> {
        match what {
            Published::Token(t) => valid_token(t).then(|| self.root.join("http-01").join(t)),
            Published::Domain(d) => {
                valid_domain(d).then(|| self.root.join("tls-alpn-01").join(format!("{d}.pem")))
            }
        }
    }

    /// Write `bytes` as `what`'s file, with an empty answer counter; returns the
    /// counter's path.
    fn publish(&self, what: Published<'_>, bytes: &[u8]) -> Result<PathBuf, ChallengeError> {
        let name = match what {
            Published::Token(n) | Published::Domain(n) => n,
        };
        let path = self
            .path(what)
            .ok_or_else(|| ChallengeError::InvalidName(name.to_string()))?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ChallengeError::Io { path, source }
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        remove_stale(dir);
        let counter = counter_path(&path);
        write_private(&counter, b"").map_err(io_err(&counter))?;
        write_private(&path, bytes).map_err(io_err(&path))?;
        Ok(counter)
    }

    /// Remove `what`'s file and counter.
    fn withdraw(&self, what: Published<'_>) {
        if let Some(path) = self.path(what) {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(counter_path(&path));
        }
    }

    /// `what`'s file, counted as answered once, if a replica published it.
    fn answer(&self, what: Published<'_>) -> Option<Vec<u8>> {
        let path = self.path(what)?;
        let bytes = fs::read(&path).ok()?;
        // Append only to a counter that exists: after a withdrawal nothing is created.
        if let Ok(mut f) = fs::OpenOptions::new()
            .append(true)
            .open(counter_path(&path))
        {
            let _ = f.write_all(b".");
        }
        Some(bytes)
    }
}

fn counter_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".served");
    path.with_file_name(name)
}

/// An ACME token as a file name: base64url characters only (RFC 8555 §8.1), at most
/// 255 of them.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 255
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A lower-case DNS name as a file name: dot-separated labels of 1 to 63 letters,
/// digits and hyphens, 253 characters at most (so no `/`, no `..`, no leading dot).
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

use isthmus_files::write_private;

/// Remove files of `dir` last written more than [`STALE`] ago.
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten().take(10_000) {
        let old = e
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The challenge maps of one gateway (or of every gateway of a process): HTTP-01
/// tokens and TLS-ALPN-01 certificates. Cloning shares the maps. Whoever starts the
/// gateway creates one, gives it to the listeners that answer challenges
/// (`ListenerConfig::acme`) and to the ACME manager that fills it.
#[derive(Debug, Clone, Default)]
pub struct AcmeChallenges {
    /// Answered by the gateway's plain-HTTP listeners ([`answer`]).
    pub http01: Arc<ChallengeTokens>,
    /// Answered in the gateway's HTTPS listeners' handshakes.
    pub tls_alpn01: Arc<AlpnChallenges>,
}

impl AcmeChallenges {
    /// Empty maps, answering nothing until challenges are inserted.
    pub fn new() -> AcmeChallenges {
        AcmeChallenges::default()
    }

    /// Share the challenges of both maps through `dir`, and answer from it what they
    /// miss. Called once at start-up by whoever runs the ACME client (a later call
    /// replaces the directory for challenges inserted from then on).
    pub fn share_dir(&self, dir: &Path) {
        self.http01.share_dir(dir);
        self.tls_alpn01.share_dir(dir);
    }
}

/// A token's answer.
#[derive(Debug)]
struct TokenEntry {
    key_authorization: String,
    pending: Arc<PendingChallenge>,
}

/// Token -> pending challenge. Readers never lock; writers copy the (small) map.
#[derive(Debug, Default)]
pub struct ChallengeTokens {
    map: ArcSwap<HashMap<String, Arc<TokenEntry>>>,
    share: ArcSwapOption<ChallengeDir>,
}

impl ChallengeTokens {
    /// Publish tokens inserted from now on in `dir`, and answer tokens this map does
    /// not hold from there (see [`ChallengeDir`]).
    pub fn share_dir(&self, dir: &Path) {
        self.share.store(Some(Arc::new(ChallengeDir::new(dir))));
    }

    /// Answer `token` with `key_authorization` until [`ChallengeTokens::remove`]
    /// (and publish it in the shared directory, if one is set: when that fails, the
    /// reason is logged and only this process answers).
    pub fn insert(&self, token: &str, key_authorization: &str) -> Arc<PendingChallenge> {
        let counter = self.share.load_full().and_then(|dir| {
            dir.publish(Published::Token(token), key_authorization.as_bytes())
                .inspect_err(|e| {
                    warn!("acme: {e}; only this process answers the HTTP-01 challenge")
                })
                .ok()
        });
        let entry = Arc::new(TokenEntry {
            key_authorization: key_authorization.to_string(),
            pending: PendingChallenge::new(counter),
        });
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(token.to_string(), entry.clone());
            m
        });
        entry.pending.clone()
    }

    /// Stop answering `token` (here and in the shared directory).
    pub fn remove(&self, token: &str) {
        if let Some(dir) = self.share.load_full() {
            dir.withdraw(Published::Token(token));
        }
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(token);
            m
        });
    }

    /// The key authorization for `token`, counted as served: from this map, else
    /// from the shared directory (a replica's order).
    pub fn answer(&self, token: &str) -> Option<String> {
        if let Some(entry) = self.map.load().get(token) {
            entry.pending.served.fetch_add(1, Ordering::Relaxed);
            return Some(entry.key_authorization.clone());
        }
        let dir = self.share.load_full()?;
        let bytes = dir.answer(Published::Token(token))?;
        let key_authorization = String::from_utf8(bytes).ok()?;
        info!(
            "acme: answered HTTP-01 token {token} published by a replica in {}",
            dir.root().display()
        );
        Some(key_authorization)
    }

    /// Whether no challenge of this process is pending.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A domain's TLS-ALPN-01 answer.
struct AlpnEntry {
    config: Arc<ServerConfig>,
    pending: Arc<PendingChallenge>,
}

/// Domain -> the rustls configuration answering its TLS-ALPN-01 challenge
/// (certificate with the `acmeIdentifier` extension, ALPN `acme-tls/1` only).
#[derive(Default)]
pub struct AlpnChallenges {
    map: ArcSwap<HashMap<String, Arc<AlpnEntry>>>,
    share: ArcSwapOption<ChallengeDir>,
}

impl std::fmt::Debug for AlpnChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpnChallenges")
            .field("domains", &self.map.load().keys().collect::<Vec<_>>())
            .field("share", &self.share.load())
            .finish()
    }
}

/// `domain` as the maps key it: lower case, no trailing dot.
fn normalize(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// The rustls configuration answering one TLS-ALPN-01 challenge with this
/// certificate and key (PEM).
///
/// Not through `tls::certified_key`: rustls' key check parses the certificate with
/// webpki, which refuses the critical `acmeIdentifier` extension every challenge
/// certificate has (`UnsupportedCriticalExtension`). The key is checked here by
/// finding its SubjectPublicKeyInfo in the certificate instead.
fn alpn_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("no certificate in the PEM".into());
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let spki = key
        .public_key()
        .ok_or("the private key's public key is unknown")?;
    let spki: &[u8] = spki.as_ref();
    if spki.is_empty() || !leaf.windows(spki.len()).any(|w| w == spki) {
        return Err("the private key does not match the certificate".into());
    }
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(crate::tls::Fixed(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

impl AlpnChallenges {
    /// Publish challenges inserted from now on in `dir`, and answer domains this map
    /// does not hold from there (see [`ChallengeDir`]).
    pub fn share_dir(&self, dir: &Path) {
        self.share.store(Some(Arc::new(ChallengeDir::new(dir))));
    }

    /// Answer TLS-ALPN-01 handshakes for `domain` with this certificate (PEM, with
    /// the `acmeIdentifier` extension) and key (PEM) until
    /// [`AlpnChallenges::remove`], and publish them in the shared directory if one is
    /// set (when that fails, the reason is logged and only this process answers).
    /// Errors when the PEM does not parse or the key does not match.
    pub fn insert(
        &self,
        domain: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Arc<PendingChallenge>, ChallengeError> {
        let domain = normalize(domain);
        let config =
            alpn_config(cert_pem, key_pem).map_err(|reason| ChallengeError::Certificate {
                domain: domain.clone(),
                reason,
            })?;
        let counter = self.share.load_full().and_then(|dir| {
            let mut pem = cert_pem.to_vec();
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(key_pem);
            dir.publish(Published::Domain(&domain), &pem)
                .inspect_err(|e| {
                    warn!("acme: {e}; only this process answers the TLS-ALPN-01 challenge")
                })
                .ok()
        });
        let entry = Arc::new(AlpnEntry {
            config: Arc::new(config),
            pending: PendingChallenge::new(counter),
        });
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(domain.clone(), entry.clone());
            m
        });
        Ok(entry.pending.clone())
    }

    /// Stop answering for `domain` (here and in the shared directory).
    pub fn remove(&self, domain: &str) {
        let domain = normalize(domain);
        if let Some(dir) = self.share.load_full() {
            dir.withdraw(Published::Domain(&domain));
        }
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&domain);
            m
        });
    }

    /// The configuration answering `sni`'s challenge, if one is pending, counted as
    /// served: from this map, else from the shared directory (a replica's order).
    /// Called for `acme-tls/1` handshakes only.
    pub fn config_for(&self, sni: &str) -> Option<Arc<ServerConfig>> {
        let sni = normalize(sni);
        if let Some(entry) = self.map.load().get(&sni) {
            entry.pending.served.fetch_add(1, Ordering::Relaxed);
            return Some(entry.config.clone());
        }
        let dir = self.share.load_full()?;
        let pem = dir.answer(Published::Domain(&sni))?;
        match alpn_config(&pem, &pem) {
            Ok(config) => {
                info!(
                    "acme: answering the TLS-ALPN-01 challenge for {sni} published by a replica in {}",
                    dir.root().display()
                );
                Some(Arc::new(config))
            }
            Err(e) => {
                warn!("acme: the shared TLS-ALPN-01 challenge for {sni} does not load: {e}");
                None
            }
        }
    }

    /// Whether no challenge of this process is pending.
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

/// The key authorization to answer `req` with, when it asks for a pending HTTP-01
/// challenge of `tokens` (`None`: something else, routing goes on). Public for the
/// fuzz targets; the request path calls it first thing.
#[doc(hidden)]
pub fn answer(
    scheme: &str,
    req: &pingora::http::RequestHeader,
    tokens: &ChallengeTokens,
) -> Option<String> {
    let token = challenge_token(scheme, &req.method, req.uri.path())?;
    let key_authorization = tokens.answer(token)?;
    debug!(token, "acme: answering an HTTP-01 challenge");
    Some(key_authorization)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn shared_names_cannot_leave_the_directory() {
        for t in ["abc-_123", "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"] {
            assert!(valid_token(t), "{t}");
        }
        let long = "x".repeat(256);
        for t in [
            "", ".", "..", "../x", "a/b", "a.b", ".hidden", "a\\b", "a b", "é", &long,
        ] {
            assert!(!valid_token(t), "{t:?}");
        }
        for d in [
            "a.test",
            "www.example.com",
            "xn--bcher-kva.test",
            "localhost",
        ] {
            assert!(valid_domain(d), "{d}");
        }
        let label = "a".repeat(64);
        for d in [
            "",
            ".",
            "..",
            ".a.test",
            "a..test",
            "a.test.",
            "a/b",
            "../a",
            "a.test/..",
            "A.test",
            "*.a.test",
            "a_b.test",
            &label,
        ] {
            assert!(!valid_domain(d), "{d:?}");
        }

        // A request path naming a file outside the directory is not read.
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("challenges");
        std::fs::create_dir_all(root.join("http-01")).expect("mkdir");
        std::fs::write(tmp.path().join("secret"), "key").expect("write");
        std::fs::write(root.join("http-01/.hidden"), "x").expect("write");
        let tokens = ChallengeTokens::default();
        tokens.share_dir(&root);
        for t in ["../../secret", "..%2F..%2Fsecret", ".hidden", "..", "."] {
            assert_eq!(tokens.answer(t), None, "{t}");
        }
        let alpn = AlpnChallenges::default();
        alpn.share_dir(&root);
        assert!(alpn.config_for("../../secret").is_none());
        // An invalid token is answered by this process but not published.
        let pending = tokens.insert("a.b", "a.b.thumb");
        assert_eq!(tokens.answer("a.b").as_deref(), Some("a.b.thumb"));
        assert_eq!(pending.served(), 1);
        assert!(!root.join("http-01/a.b").exists());
    }

    #[test]
    fn replicas_answer_tokens_published_in_the_shared_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("state/challenges");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        // Two maps on one directory, as two processes would be.
        let (orderer, replica) = (ChallengeTokens::default(), ChallengeTokens::default());
        orderer.share_dir(&root);
        replica.share_dir(&root);
        assert_eq!(replica.answer("tok"), None);
        assert!(!root.exists(), "nothing is created by a lookup");

        let pending = orderer.insert("tok", "tok.thumb");
        let file = root.join("http-01/tok");
        assert_eq!(fs::read_to_string(&file).expect("read"), "tok.thumb");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("http-01")), 0o700);
        assert!(replica.is_empty(), "not this process's challenge");
        assert_eq!(replica.answer("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(replica.answer("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(orderer.answer("tok").as_deref(), Some("tok.thumb"));
        assert_eq!((pending.served(), pending.served_here()), (3, 1));

        orderer.remove("tok");
        assert_eq!(replica.answer("tok"), None);
        assert_eq!(orderer.answer("tok"), None);
        let left: Vec<_> = fs::read_dir(root.join("http-01"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn stale_challenges_of_a_killed_process_are_removed_at_the_next_publication() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("http-01");
        fs::create_dir_all(&dir).expect("mkdir");
        let stale = dir.join("old");
        let f = fs::File::create(&stale).expect("create");
        f.set_modified(SystemTime::now() - 2 * STALE)
            .expect("mtime");
        let recent = dir.join("recent");
        fs::write(&recent, "r.thumb").expect("write");
        let tokens = ChallengeTokens::default();
        tokens.share_dir(tmp.path());
        tokens.insert("new", "new.thumb");
        assert!(!stale.exists());
        assert!(recent.exists(), "another replica's pending challenge stays");
        assert!(dir.join("new").exists());
    }

    /// A TLS-ALPN-01 challenge certificate for `name` (a critical acmeIdentifier
    /// extension) and its key, by the `openssl` command; `tag` names the files.
    fn openssl_cert(dir: &Path, name: &str, tag: &str) -> (Vec<u8>, Vec<u8>) {
        let (crt, key) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        let digest = "00".repeat(32);
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "1", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-addext")
            .arg(format!("1.3.6.1.5.5.7.1.31=critical,DER:0420{digest}"))
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "{out:?}");
        (fs::read(crt).expect("crt"), fs::read(key).expect("key"))
    }

    #[test]
    fn replicas_answer_tls_alpn_challenges_published_in_the_shared_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("challenges");
        let (cert, key) = openssl_cert(tmp.path(), "alpn.test", "a");
        let (_, other_key) = openssl_cert(tmp.path(), "alpn.test", "b");
        let (orderer, replica) = (AlpnChallenges::default(), AlpnChallenges::default());
        orderer.share_dir(&root);
        replica.share_dir(&root);
        assert!(matches!(
            orderer.insert("alpn.test", &cert, b"not a key"),
            Err(ChallengeError::Certificate { .. })
        ));
        let e = orderer
            .insert("alpn.test", &cert, &other_key)
            .expect_err("another key");
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(replica.config_for("alpn.test").is_none());

        let pending = orderer.insert("ALPN.test.", &cert, &key).expect("insert");
        let file = root.join("tls-alpn-01/alpn.test.pem");
        assert_eq!(
            fs::metadata(&file).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        let config = replica.config_for("alpn.test").expect("shared");
        assert_eq!(config.alpn_protocols, [ACME_TLS_ALPN.to_vec()]);
        assert!(orderer.config_for("alpn.test.").is_some());
        assert!(replica.config_for("other.test").is_none());
        assert_eq!((pending.served(), pending.served_here()), (2, 1));

        orderer.remove("alpn.test");
        assert!(replica.config_for("alpn.test").is_none());
        assert!(orderer.config_for("alpn.test").is_none());
        assert!(!file.exists());
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
