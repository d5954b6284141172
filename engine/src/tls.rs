//! TLS termination for HTTPS listeners: each handshake gets the settings of the
//! Gateway server its SNI names. [`SniResolver`] reads the ClientHello itself
//! ([`ClientHelloReader`]: rustls' `Acceptor` without I/O, fuzzed in `fuzz/`; then
//! the bytes are replayed), picks the server, and completes the handshake with that
//! server's own rustls `ServerConfig`: its certificate, protocol versions, cipher
//! suites and client-certificate checks ([`TlsPolicy`]). So servers
//! with different TLS modes, CAs or versions share a port, which one Pingora
//! `TlsSettings` per listener cannot do. The SNI map is built from a snapshot's
//! [`TlsTermination`] (PEM in, parsed here) and swapped atomically: new handshakes see
//! the new settings, established connections keep theirs. The map is the model's
//! best-match table ([`NameIndex`], SNI rules: case and one trailing dot ignored),
//! the same choice `TlsTermination::server_for` makes: an exact name, then the
//! longest `*` suffix, then `*`; no SNI: the `*` server. A name whose server cannot
//! serve (no usable certificate or client CA), or no match at all, is refused with
//! an `access_denied` alert.
//!
//! Client certificates (MUTUAL, OPTIONAL_MUTUAL) are checked inside the handshake: a
//! chain to the server's CA (webpki), then `subjectAltNames` and the
//! `verifyCertificate*` pins (the model's DER reader, [`isthmus_model::der`], reads
//! the SANs and the public key), so a refused client never gets to send a request.
//! Each accepted connection carries a [`TlsConnection`] in its `SslDigest`
//! extension, for checks per request ([`TlsConnection::admits`]).

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use isthmus_model::der::{self, San};
use isthmus_model::host::{NameIndex, TrailingDot};
use isthmus_model::snapshot::{
    CipherSuite, ClientCertificate, ClientVerification, TlsCredential, TlsPolicy, TlsTermination,
    TlsVersion,
};
use parking_lot::Mutex;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::tls::{hash_certificate, TlsAcceptor};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::acme_challenge::{is_tls_alpn_challenge, AlpnChallenges};

/// A fatal `access_denied` alert record, sent when no server serves the SNI.
const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// A ClientHello larger than this is refused (rustls' own limit is lower).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// A credential that cannot serve: the secret, the Gateway server, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{secret} ({server}): {reason}")]
pub struct CertificateError {
    /// `Secret ns/name`.
    pub secret: String,
    /// `Gateway ns/name spec.servers[i]`.
    pub server: String,
    pub reason: String,
}

/// A handshake that did not complete: the SNI asked for and why. The listener logs
/// it as one line; the client got an alert or a closed connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS handshake refused (SNI {}): {reason}", sni.as_deref().unwrap_or("none"))]
pub struct Refused {
    pub sni: Option<String>,
    pub reason: String,
}

impl Refused {
    fn new(sni: Option<String>, reason: impl Into<String>) -> Refused {
        Refused {
            sni,
            reason: reason.into(),
        }
    }
}

/// What a connection was accepted as; in the `SslDigest` extension of every
/// connection an HTTPS listener accepts.
#[derive(Debug)]
pub struct TlsConnection {
    /// `Gateway ns/name spec.servers[i]` of the server the SNI chose.
    pub server: String,
    /// The settings its handshake was made with.
    pub policy: Arc<TlsPolicy>,
    /// The SPIFFE ID (`spiffe://...` URI SAN) of the client certificate the
    /// handshake verified, if any: the mesh peer's identity on a sidecar's inbound.
    pub peer_identity: Option<String>,
    /// The SHA-256 of that certificate (DER), hex: `Hash=` in
    /// `x-forwarded-client-cert`, as Envoy writes it.
    pub peer_cert_sha256: Option<String>,
}

impl TlsConnection {
    /// The connection a request came on (its digest), when its listener terminated
    /// TLS.
    pub fn of_digest(digest: &pingora::protocols::Digest) -> Option<&TlsConnection> {
        digest.ssl_digest.as_ref()?.extension.get::<TlsConnection>()
    }

    /// Whether a request for `authority` may be served on this connection: the
    /// server its host gets by the SNI rules (`tls`: the listener's servers in the
    /// request's snapshot) has the same TLS settings as the one this connection was
    /// accepted by, so a client cannot pass one server's handshake and then reach
    /// the routes of a server that verifies clients differently. A host no server
    /// claims is left to routing (which has no virtual host for it).
    pub fn admits(&self, tls: &TlsTermination, authority: &str) -> bool {
        let host = isthmus_model::snapshot::strip_port(authority);
        tls.server_for(Some(host))
            .is_none_or(|s| s.policy == *self.policy)
    }
}

/// Everything a handshake for one server needs; shared by every server with the
/// same credential and policy.
struct Setup {
    cert: Arc<CertifiedKey>,
    config: Arc<ServerConfig>,
    policy: Arc<TlsPolicy>,
}

/// One Gateway server as handshakes see it.
struct Served {
    setup: Arc<Setup>,
    /// Pingora's acceptor over `setup.config`, with the callback that stores the
    /// [`TlsConnection`].
    acceptor: Acceptor,
}

/// What a name is served as.
#[derive(Clone)]
enum Target {
    /// TLS terminated here with this server's settings.
    Terminate(Arc<Served>),
    /// Forwarded unchanged (a PASSTHROUGH server's `tls` route).
    Passthrough,
    /// The server claiming the name cannot serve: refused rather than served by
    /// another one.
    Refuse,
}

/// SNI pattern -> target: servers first, then PASSTHROUGH routes; the first
/// claimant of a pattern keeps it.
type SniMap = NameIndex<Target>;

/// An empty map with the SNI rules (one trailing dot ignored).
fn sni_map() -> SniMap {
    NameIndex::new(TrailingDot::Ignored)
}

/// The terminating server for a name, if that is what it gets.
fn served<'m>(map: &'m SniMap, sni: Option<&str>) -> Option<&'m Arc<Served>> {
    match map.get(sni)? {
        Target::Terminate(served) => Some(served),
        _ => None,
    }
}

/// How [`SniResolver::handshake`] accepted a connection.
pub enum Accepted {
    /// TLS terminated here: the decrypted stream, for HTTP.
    Terminated(Stream),
    /// The SNI names a PASSTHROUGH route: the TCP connection and the ClientHello
    /// bytes already read from it, to be written to the upstream first.
    Passthrough {
        tcp: Box<L4Stream>,
        hello: Vec<u8>,
        sni: Option<String>,
    },
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accepted::Terminated(_) => f.write_str("Terminated"),
            Accepted::Passthrough { sni, hello, .. } => f
                .debug_struct("Passthrough")
                .field("sni", sni)
                .field("hello_bytes", &hello.len())
                .finish(),
        }
    }
}

/// A server's credential and policy, and what building its setup gave.
type Loaded = (
    (TlsCredential, TlsPolicy),
    Result<Arc<Setup>, (String, String)>,
);

/// The TLS servers of one HTTPS listener. One writer ([`SniResolver::update`]),
/// lock-free readers (the handshakes).
pub struct SniResolver {
    map: ArcSwap<SniMap>,
    provider: Arc<CryptoProvider>,
    /// Setups built for the current map, so an unchanged server is neither rebuilt
    /// nor reported again.
    loaded: Mutex<Vec<Loaded>>,
    /// The pending TLS-ALPN-01 challenges `acme-tls/1` handshakes are answered from;
    /// none: such handshakes are refused.
    acme: ArcSwapOption<AlpnChallenges>,
}

impl SniResolver {
    /// A resolver that refuses every handshake until [`SniResolver::update`].
    pub fn new() -> SniResolver {
        // Pingora's `TlsSettings::build` installs it too; verifiers need it first.
        pingora::tls::install_default_crypto_provider();
        SniResolver {
            map: ArcSwap::from_pointee(sni_map()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            loaded: Mutex::new(Vec::new()),
            acme: ArcSwapOption::empty(),
        }
    }

    /// Answer `acme-tls/1` handshakes from `challenges` from now on (`None`: refuse
    /// them). A listener sets its resolver's map from its `ListenerConfig::acme`.
    pub fn set_acme_challenges(&self, challenges: Option<Arc<AlpnChallenges>>) {
        self.acme.store(challenges);
    }

    /// Build the servers of `tls` and swap them in. Returns the servers that cannot
    /// serve and were not reported by an earlier update (their names are refused);
    /// the others are served. A server whose client-certificate check is
    /// `Unavailable` is refused silently: the compiler reported it.
    pub fn update(&self, tls: &TlsTermination) -> Vec<CertificateError> {
        let mut loaded = self.loaded.lock();
        let mut next: Vec<Loaded> = Vec::new();
        let mut errors = Vec::new();
        let mut map = sni_map();
        for server in &tls.servers {
            let setup = server.credential.as_ref().and_then(|cred| {
                if server.policy.client_certificate == ClientCertificate::Unavailable {
                    return None;
                }
                let key = (cred.clone(), server.policy.clone());
                if let Some((_, done)) = next.iter().find(|(k, _)| *k == key) {
                    return done.as_ref().ok().cloned();
                }
                let done = match loaded.iter().find(|(k, _)| *k == key) {
                    Some((_, done)) => done.clone(),
                    None => {
                        let done = build_setup(cred, &server.policy, &self.provider);
                        if let Err((secret, reason)) = &done {
                            errors.push(CertificateError {
                                secret: secret.clone(),
                                server: server.source.clone(),
                                reason: reason.clone(),
                            });
                        }
                        done
                    }
                };
                next.push((key, done.clone()));
                done.ok()
            });
            let served = setup.and_then(|setup| {
                let conn = Arc::new(TlsConnection {
                    server: server.source.clone(),
                    policy: setup.policy.clone(),
                    peer_identity: None,
                    peer_cert_sha256: None,
                });
                let acceptor = acceptor(setup.config.clone(), conn)?;
                Some(Arc::new(Served { setup, acceptor }))
            });
            let target = served.map_or(Target::Refuse, Target::Terminate);
            for pattern in &server.sni {
                map.insert(pattern, target.clone());
            }
        }
        for route in &tls.passthrough {
            for pattern in &route.sni {
                map.insert(pattern, Target::Passthrough);
            }
        }
        self.map.store(Arc::new(map));
        *loaded = next;
        errors
    }

    /// The certificate a handshake with this SNI (or none) gets.
    pub fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        served(&self.map.load(), sni).map(|s| s.setup.cert.clone())
    }

    /// The rustls settings a handshake with this SNI (or none) gets.
    pub fn config_for(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        served(&self.map.load(), sni).map(|s| s.setup.config.clone())
    }

    /// Read the ClientHello of a freshly accepted TCP connection and act on its SNI:
    /// complete the handshake with that server's settings, or hand the connection
    /// back for a PASSTHROUGH route, or answer a pending TLS-ALPN-01 challenge of its
    /// map, if it has one (then the connection ends: `Err`). The caller bounds the
    /// time this takes.
    pub async fn handshake(&self, stream: Stream) -> Result<Accepted, Refused> {
        let mut tcp: Box<L4Stream> = stream
            .into_any()
            .downcast()
            .map_err(|_| Refused::new(None, "not a TCP connection"))?;
        let hello = match read_client_hello(&mut tcp).await {
            Ok(read) => read,
            Err(bad) => {
                send(&mut tcp, &bad.alert).await;
                return Err(Refused::new(None, bad.reason));
            }
        };
        let sni = hello.sni;
        if hello.acme_tls_alpn {
            let challenges = self.acme.load_full();
            return answer_tls_alpn_challenge(challenges.as_deref(), tcp, hello.bytes, sni).await;
        }
        let target = self.map.load().get(sni.as_deref()).cloned();
        let served = match target {
            Some(Target::Terminate(served)) => served,
            Some(Target::Passthrough) => {
                return Ok(Accepted::Passthrough {
                    tcp,
                    hello: hello.bytes,
                    sni,
                })
            }
            Some(Target::Refuse) | None => {
                send(&mut tcp, &ACCESS_DENIED).await;
                let why = if sni.is_some() {
                    "no Gateway server with a usable certificate has this name"
                } else {
                    "no SNI, and no `*` server with a usable certificate"
                };
                return Err(Refused::new(sni, why));
            }
        };
        tcp.rewind(&hello.bytes);
        match served.acceptor.tls_handshake(*tcp).await {
            Ok(tls) => Ok(Accepted::Terminated(Box::new(tls))),
            Err(e) => Err(Refused::new(sni, handshake_error(&e))),
        }
    }
}

/// Pingora's error reads ` TLSHandshakeFailure context: tls connect error: <rustls'
/// reason>`: keep the reason.
fn handshake_error(e: &pingora::Error) -> String {
    let text = e.root_cause().to_string();
    let why = text.split_once("error: ").map_or(text.as_str(), |(_, w)| w);
    why.trim().to_string()
}

/// Complete a TLS-ALPN-01 validation handshake with the pending challenge
/// certificate of `sni` in `challenges`, then close: the validator only checks the
/// certificate. Without a map (a listener that answers no ACME challenge) or a
/// pending challenge, refused.
async fn answer_tls_alpn_challenge(
    challenges: Option<&AlpnChallenges>,
    mut tcp: Box<L4Stream>,
    hello: Vec<u8>,
    sni: Option<String>,
) -> Result<Accepted, Refused> {
    let config = challenges
        .zip(sni.as_deref())
        .and_then(|(challenges, name)| challenges.config_for(name));
    let Some(config) = config else {
        send(&mut tcp, &ACCESS_DENIED).await;
        return Err(Refused::new(
            sni,
            "acme-tls/1 with no pending TLS-ALPN-01 challenge",
        ));
    };
    tcp.rewind(&hello);
    let acceptor = TlsAcceptor::from(config);
    match acceptor.accept(*tcp).await {
        Ok(mut tls) => {
            debug!(
                sni = sni.as_deref().unwrap_or(""),
                "acme: answered a TLS-ALPN-01 challenge"
            );
            let _ = tls.shutdown().await;
            Err(Refused::new(sni, "TLS-ALPN-01 challenge answered"))
        }
        Err(e) => Err(Refused::new(sni, format!("TLS-ALPN-01 handshake: {e}"))),
    }
}

impl Default for SniResolver {
    fn default() -> SniResolver {
        SniResolver::new()
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.load();
        f.debug_struct("SniResolver")
            .field("patterns", &map.patterns().collect::<Vec<_>>())
            .field("acme", &self.acme.load().is_some())
            .finish()
    }
}

/// Write a few bytes (an alert) and flush; the connection is dropped next anyway.
async fn send(tcp: &mut L4Stream, bytes: &[u8]) {
    if !bytes.is_empty() && tcp.write_all(bytes).await.is_ok() {
        let _ = tcp.flush().await;
    }
}

/// The answer to a plain HTTP request on a TLS port, so that `curl http://host:443/`
/// says what went wrong instead of "connection reset" (as Go's and nginx's servers
/// do).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 49\r\n\r\nClient sent an HTTP request to an HTTPS server.\r\n";

/// Whether the first bytes of a connection are an HTTP/1 request line (a method in
/// capitals, then a space) or the HTTP/2 preface, not a TLS record (which starts
/// with 0x16).
pub(crate) fn looks_like_plain_http(first: &[u8]) -> bool {
    const METHODS: [&[u8]; 10] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI * ",
    ];
    METHODS.iter().any(|m| first.starts_with(m))
}

/// How many bytes [`read_client_hello`] asks the socket for at a time.
const READ_SIZE: usize = 4096;

/// A ClientHello read off a connection.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Everything read so far, to replay.
    pub bytes: Vec<u8>,
    pub sni: Option<String>,
    /// ALPN is `acme-tls/1` alone (a TLS-ALPN-01 validation).
    pub acme_tls_alpn: bool,
}

/// Why the first bytes of a connection are no ClientHello we serve, and what to
/// write back before closing: an alert record, the plain-HTTP 400, or nothing.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadHello {
    pub reason: String,
    /// Bytes to send before closing (possibly none).
    pub alert: Vec<u8>,
}

impl BadHello {
    fn new(reason: impl Into<String>, alert: Vec<u8>) -> BadHello {
        BadHello {
            reason: reason.into(),
            alert,
        }
    }
}

/// The ClientHello peek without I/O: the bytes of a connection go in as they are
/// read ([`ClientHelloReader::feed`]) until a whole ClientHello is in (its SNI and
/// ALPN, and every byte read, to replay), or the bytes are refused: plain HTTP
/// (answered with a 400), not TLS, a bad ClientHello (a rustls alert), or more than
/// [`ClientHelloReader::MAX_BYTES`] without a whole ClientHello. Public for the fuzz
/// targets; the listener's path is [`SniResolver::handshake`].
#[doc(hidden)]
pub struct ClientHelloReader {
    acceptor: rustls::server::Acceptor,
    /// Everything fed so far.
    read: Vec<u8>,
}

impl Default for ClientHelloReader {
    fn default() -> ClientHelloReader {
        ClientHelloReader::new()
    }
}

impl fmt::Debug for ClientHelloReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHelloReader")
            .field("buffered", &self.read.len())
            .finish_non_exhaustive()
    }
}

impl ClientHelloReader {
    /// More bytes than this without a whole ClientHello are refused (so at most
    /// this plus one read is ever buffered).
    pub const MAX_BYTES: usize = MAX_CLIENT_HELLO;

    pub fn new() -> ClientHelloReader {
        ClientHelloReader {
            acceptor: rustls::server::Acceptor::default(),
            read: Vec::new(),
        }
    }

    /// How many bytes are held (everything fed since the start).
    pub fn buffered(&self) -> usize {
        self.read.len()
    }

    /// The next bytes read off the connection: `Ok(None)` until a whole ClientHello
    /// is in, then the hello (holding every byte fed). Once it has answered
    /// `Ok(Some)` or `Err`, the reader is done: feed it no more.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Option<Hello>, BadHello> {
        self.read.extend_from_slice(bytes);
        if looks_like_plain_http(&self.read) {
            return Err(BadHello::new(
                "plain HTTP on a TLS port (answered 400)",
                PLAIN_HTTP_ANSWER.to_vec(),
            ));
        }
        while !bytes.is_empty() {
            match self.acceptor.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(BadHello::new(
                        format!("not a TLS ClientHello: {e}"),
                        Vec::new(),
                    ))
                }
            }
        }
        match self.acceptor.accept() {
            Ok(None) if self.read.len() <= MAX_CLIENT_HELLO => Ok(None),
            Ok(None) => Err(BadHello::new("ClientHello too large", Vec::new())),
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let sni = hello.server_name().map(str::to_owned);
                let acme_tls_alpn = hello.alpn().is_some_and(is_tls_alpn_challenge);
                Ok(Some(Hello {
                    bytes: std::mem::take(&mut self.read),
                    sni,
                    acme_tls_alpn,
                }))
            }
            Err((e, mut alert)) => {
                let mut bytes = Vec::new();
                let _ = alert.write_all(&mut bytes);
                Err(BadHello::new(format!("bad ClientHello: {e}"), bytes))
            }
        }
    }
}

/// Read until a whole ClientHello is in ([`ClientHelloReader`] over the socket's
/// reads). On error, the reason and the alert to send (possibly empty).
async fn read_client_hello(tcp: &mut L4Stream) -> Result<Hello, BadHello> {
    let mut reader = ClientHelloReader::new();
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = match tcp.read(&mut buf).await {
            Ok(0) => return Err(BadHello::new("closed before its ClientHello", Vec::new())),
            Ok(n) => n,
            Err(e) => {
                return Err(BadHello::new(
                    format!("reading the ClientHello: {e}"),
                    Vec::new(),
                ))
            }
        };
        if let Some(hello) = reader.feed(&buf[..n])? {
            return Ok(hello);
        }
    }
}

/// Pingora's acceptor over `config`, with the callback storing `conn` in each
/// connection's digest. Pingora only attaches callbacks to acceptors it builds, so
/// build one (from a placeholder resolver) and put our configuration in. (Pingora's
/// `with_callbacks` cannot fail today; `None` would refuse the server.)
fn acceptor(config: Arc<ServerConfig>, conn: Arc<TlsConnection>) -> Option<Acceptor> {
    let mut settings = TlsSettings::with_callbacks(Box::new(OnHandshake(conn))).ok()?;
    settings.set_cert_resolver(Arc::new(NoCertificate));
    let mut acceptor = settings.build();
    acceptor.acceptor = TlsAcceptor::from(config);
    Some(acceptor)
}

struct OnHandshake(Arc<TlsConnection>);

#[async_trait]
impl TlsAccept for OnHandshake {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        // A verified client certificate: keep its SPIFFE ID with the connection.
        let der = tls.peer_certificate_der();
        let peer_identity = der.and_then(spiffe_id);
        if peer_identity.is_none() {
            return Some(self.0.clone());
        }
        let peer_cert_sha256 = der.map(|d| {
            hash_certificate(&CertificateDer::from(d.to_vec()))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        Some(Arc::new(TlsConnection {
            server: self.0.server.clone(),
            policy: self.0.policy.clone(),
            peer_identity,
            peer_cert_sha256,
        }))
    }
}

/// The `spiffe://` URI SAN of a certificate (DER), if it has exactly one.
pub fn spiffe_id(der: &[u8]) -> Option<String> {
    let mut ids = der::subject_alt_names(der)?
        .into_iter()
        .filter_map(|san| match san {
            San::Uri(uri) if uri.starts_with("spiffe://") => Some(uri),
            _ => None,
        });
    let first = ids.next()?;
    ids.next().is_none().then(|| first.to_string())
}

/// The placeholder resolver of [`acceptor`]'s throw-away configuration.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A server's certificate, whatever the ClientHello (the SNI chose the server).
#[derive(Debug)]
pub(crate) struct Fixed(pub(crate) Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Parse a server's credential and build its rustls configuration. On error: the
/// secret at fault and why.
fn build_setup(
    cred: &TlsCredential,
    policy: &TlsPolicy,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<Setup>, (String, String)> {
    let cert = certified_key(cred, provider).map_err(|e| (cred.secret.clone(), e))?;
    let config = server_config(cert.clone(), policy, provider, &cred.secret)?;
    Ok(Arc::new(Setup {
        cert,
        config: Arc::new(config),
        policy: Arc::new(policy.clone()),
    }))
}

/// The rustls settings of one server: versions, suites, client certificates, ALPN
/// h2 then http/1.1. On error: the secret at fault (`secret`, or the CA's) and why.
fn server_config(
    cert: Arc<CertifiedKey>,
    policy: &TlsPolicy,
    provider: &CryptoProvider,
    secret: &str,
) -> Result<ServerConfig, (String, String)> {
    let mut provider = provider.clone();
    let listed = &policy.cipher_suites;
    provider.cipher_suites.retain(|s| {
        let version = match s {
            SupportedCipherSuite::Tls12(_) => TlsVersion::Tls12,
            SupportedCipherSuite::Tls13(_) => TlsVersion::Tls13,
        };
        !listed.iter().any(|c| c.version() == version)
            || listed.iter().any(|c| rustls_suite(*c) == s.suite())
    });
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (policy.min_version..=policy.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| (secret.to_string(), format!("no usable TLS settings: {e}")))?;
    let builder = match &policy.client_certificate {
        ClientCertificate::NotRequested => builder.with_no_client_auth(),
        ClientCertificate::Verified(v) => {
            builder.with_client_cert_verifier(client_verifier(v, provider)?)
        }
        ClientCertificate::Unavailable => {
            let why = "client certificates cannot be verified".to_string();
            return Err((secret.to_string(), why));
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(cert)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn rustls_suite(c: CipherSuite) -> rustls::CipherSuite {
    use rustls::CipherSuite as R;
    match c {
        CipherSuite::Tls13Aes128GcmSha256 => R::TLS13_AES_128_GCM_SHA256,
        CipherSuite::Tls13Aes256GcmSha384 => R::TLS13_AES_256_GCM_SHA384,
        CipherSuite::Tls13Chacha20Poly1305Sha256 => R::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheEcdsaAes128GcmSha256 => R::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => R::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => R::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheRsaAes128GcmSha256 => R::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaAes256GcmSha384 => R::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaChacha20Poly1305 => R::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

/// webpki's chain check against the server's CA, plus our checks when there are
/// any. On error: the CA secret and why.
fn client_verifier(
    v: &ClientVerification,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, (String, String)> {
    let fail = |why: String| (v.ca_secret.clone(), why);
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&v.ca_pem) {
        let der = der.map_err(|e| fail(format!("the CA certificate is not valid PEM: {e}")))?;
        roots
            .add(der)
            .map_err(|e| fail(format!("a CA certificate cannot be used: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("no CA certificate in the CA PEM".into()));
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if !v.required {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder
        .build()
        .map_err(|e| fail(format!("cannot verify client certificates: {e}")))?;
    if v.subject_alt_names.is_empty()
        && v.certificate_sha256.is_empty()
        && v.spki_sha256.is_empty()
        && v.spiffe_trust_domain.is_none()
    {
        return Ok(inner);
    }
    Ok(Arc::new(ClientChecks {
        inner,
        subject_alt_names: v.subject_alt_names.clone(),
        certificate_sha256: v.certificate_sha256.clone(),
        spki_sha256: v.spki_sha256.clone(),
        spiffe_prefix: v
            .spiffe_trust_domain
            .as_ref()
            .map(|td| format!("spiffe://{td}/")),
    }))
}

/// webpki's verifier, then `subjectAltNames` and the pins on the client's
/// certificate, all before the handshake completes.
#[derive(Debug)]
struct ClientChecks {
    inner: Arc<dyn ClientCertVerifier>,
    subject_alt_names: Vec<String>,
    certificate_sha256: Vec<[u8; 32]>,
    spki_sha256: Vec<[u8; 32]>,
    /// `spiffe://<trust-domain>/`: the one SPIFFE ID the certificate carries must
    /// start with it.
    spiffe_prefix: Option<String>,
}

/// Why a certificate that chains to the CA was still refused (in the log line).
#[derive(Debug, thiserror::Error)]
#[error("client certificate refused: {0}")]
struct ClientCheckFailed(String);

impl ClientChecks {
    fn check(&self, der: &[u8]) -> Result<(), String> {
        if let Some(prefix) = &self.spiffe_prefix {
            match spiffe_id(der) {
                Some(id) if id.starts_with(prefix.as_str()) => {}
                Some(id) => return Err(format!("{id} is not of the trust domain {prefix}")),
                None => return Err("it carries no (single) SPIFFE identity".into()),
            }
        }
        if !self.subject_alt_names.is_empty() {
            let sans = der::subject_alt_names(der)
                .ok_or_else(|| "its subjectAltName cannot be read".to_string())?;
            if !sans
                .iter()
                .any(|san| self.subject_alt_names.iter().any(|want| san.matches(want)))
            {
                let have: Vec<String> = sans.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "its SANs [{}] include none of subjectAltNames [{}]",
                    have.join(", "),
                    self.subject_alt_names.join(", ")
                ));
            }
        }
        if self.certificate_sha256.is_empty() && self.spki_sha256.is_empty() {
            return Ok(());
        }
        let digest = |bytes: &[u8]| hash_certificate(&CertificateDer::from(bytes.to_vec()));
        let cert_pinned = self
            .certificate_sha256
            .iter()
            .any(|pin| pin[..] == digest(der)[..]);
        let spki_pinned = der::subject_public_key_info(der).is_some_and(|spki| {
            self.spki_sha256
                .iter()
                .any(|pin| pin[..] == digest(spki)[..])
        });
        if cert_pinned || spki_pinned {
            Ok(())
        } else {
            Err("it matches neither verifyCertificateHash nor verifyCertificateSpki".into())
        }
    }
}

impl ClientCertVerifier for ClientChecks {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity).map_err(|why| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(ClientCheckFailed(why)),
            )))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Parse a PEM chain and key into a `CertifiedKey`, checking that the key belongs to
/// the first certificate. ECDSA (P-256, P-384), RSA and Ed25519 keys, in PKCS#8,
/// PKCS#1 or SEC1 form.
pub(crate) fn certified_key(
    cred: &TlsCredential,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(&cred.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate PEM".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(&cred.private_key_pem)
        .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the private key does not match the certificate".to_string()
            }
            rustls::Error::InvalidCertificate(e) => {
                format!("the certificate is not a valid X.509 certificate ({e})")
            }
            e => format!("the private key cannot be used: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme_challenge::ACME_TLS_ALPN;
    use isthmus_model::snapshot::TlsServer;
    use pingora::tls::TlsConnector;
    use rustls::pki_types::ServerName;
    use rustls::ClientConfig;
    use std::path::Path;
    use std::process::Command;

    /// A self-signed certificate and key made by the `openssl` command.
    fn openssl_cert(dir: &Path, name: &str, key_args: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let status = Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .args(key_args)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "{status:?}");
        (
            std::fs::read(crt).expect("crt"),
            std::fs::read(key).expect("key"),
        )
    }

    const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    const RSA: &[&str] = &["-newkey", "rsa:2048"];

    fn server(name: &str, sni: &[&str], pem: Option<&(Vec<u8>, Vec<u8>)>) -> TlsServer {
        TlsServer {
            source: format!("Gateway default/gw {name}"),
            sni: sni.iter().map(|s| s.to_string()).collect(),
            secret: format!("Secret istio-system/{name}"),
            credential: pem.map(|(c, k)| TlsCredential {
                secret: format!("Secret istio-system/{name}"),
                cert_chain_pem: c.clone(),
                private_key_pem: k.clone(),
            }),
            policy: TlsPolicy::default(),
        }
    }

    /// The CN-bearing leaf certificate a handshake with `sni` gets.
    fn served(r: &SniResolver, sni: Option<&str>) -> Option<Vec<u8>> {
        r.certificate_for(sni).map(|c| c.cert[0].to_vec())
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem).expect("pem").to_vec()
    }

    #[test]
    fn selection_by_sni() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exact = openssl_cert(dir.path(), "exact", EC);
        let wide = openssl_cert(dir.path(), "wide", RSA);
        let narrow = openssl_cert(dir.path(), "narrow", EC);
        let any = openssl_cert(dir.path(), "any", EC);
        let r = SniResolver::new();
        assert_eq!(served(&r, Some("a.test")), None, "empty until updated");
        let errors = r.update(&TlsTermination {
            servers: vec![
                server("exact", &["a.example.com"], Some(&exact)),
                server("wide", &["*.example.com"], Some(&wide)),
                server("narrow", &["*.b.example.com"], Some(&narrow)),
                server("broken", &["broken.example.com"], None),
                // Claims a name an earlier server has: the first keeps it.
                server("any", &["*", "a.example.com"], Some(&any)),
            ],
            ..Default::default()
        });
        assert_eq!(errors, []);
        assert_eq!(served(&r, Some("a.example.com")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("A.Example.COM.")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("x.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("x.y.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("x.b.example.com")), Some(der(&narrow.0)));
        // The wildcard needs a label in front; then `*` serves.
        assert_eq!(served(&r, Some("b.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("example.com")), Some(der(&any.0)));
        assert_eq!(served(&r, Some("other.test")), Some(der(&any.0)));
        assert_eq!(served(&r, None), Some(der(&any.0)));
        // A server without a certificate refuses its names; `*` does not step in.
        assert_eq!(served(&r, Some("broken.example.com")), None);

        // Without a `*` server: unknown names and a missing SNI are refused.
        r.update(&TlsTermination {
            servers: vec![server("exact", &["a.example.com"], Some(&exact))],
            ..Default::default()
        });
        assert_eq!(served(&r, Some("a.example.com")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("other.test")), None);
        assert_eq!(served(&r, None), None);
    }

    #[test]
    fn unusable_credentials_are_reported_once_and_the_rest_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = openssl_cert(dir.path(), "good", EC);
        let other = openssl_cert(dir.path(), "other", EC);
        let mismatched = (good.0.clone(), other.1.clone());
        let garbled = (
            b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n".to_vec(),
            good.1.clone(),
        );
        let no_key = (good.0.clone(), b"no key here".to_vec());
        let tls = TlsTermination {
            servers: vec![
                server("mismatched", &["m.test"], Some(&mismatched)),
                server("garbled", &["g.test"], Some(&garbled)),
                server("nokey", &["k.test"], Some(&no_key)),
                server("good", &["good.test"], Some(&good)),
            ],
            ..Default::default()
        };
        let r = SniResolver::new();
        let errors = r.update(&tls);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "Secret istio-system/mismatched (Gateway default/gw mismatched): the private key does not match the certificate",
                "Secret istio-system/garbled (Gateway default/gw garbled): the certificate is not a valid X.509 certificate (BadEncoding)",
                "Secret istio-system/nokey (Gateway default/gw nokey): the private key is not valid PEM: no items found",
            ]
        );
        for sni in ["m.test", "g.test", "k.test"] {
            assert_eq!(served(&r, Some(sni)), None, "{sni}");
        }
        assert_eq!(served(&r, Some("good.test")), Some(der(&good.0)));
        // The same snapshot again: nothing new to report, same certificates.
        let before = r.certificate_for(Some("good.test")).expect("good");
        assert_eq!(r.update(&tls), []);
        let after = r.certificate_for(Some("good.test")).expect("good");
        assert!(
            Arc::ptr_eq(&before, &after),
            "unchanged credential not re-parsed"
        );
        // Fixed: served from the next update on.
        let fixed = TlsTermination {
            servers: vec![server("mismatched", &["m.test"], Some(&other))],
            ..Default::default()
        };
        assert_eq!(r.update(&fixed), []);
        assert_eq!(served(&r, Some("m.test")), Some(der(&other.0)));
    }

    /// A CA made by `openssl`, and leaf certificates it signs.
    struct Ca {
        dir: tempfile::TempDir,
        name: String,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = Command::new("openssl")
                .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
                .arg(format!("/CN={name}"))
                .args(EC)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign"])
                .arg("-keyout")
                .arg(dir.path().join("ca.key"))
                .arg("-out")
                .arg(dir.path().join("ca.crt"))
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "{out:?}");
            Ca {
                dir,
                name: name.to_string(),
            }
        }

        fn pem(&self) -> Vec<u8> {
            std::fs::read(self.dir.path().join("ca.crt")).expect("ca.crt")
        }

        /// A leaf `CN=cn` with the given SANs and extended key usage, (cert, key) PEM.
        fn leaf(&self, cn: &str, san: &str, usage: &str) -> (Vec<u8>, Vec<u8>) {
            let p = |ext: &str| self.dir.path().join(format!("{cn}.{ext}"));
            let out = Command::new("openssl")
                .args(["req", "-new", "-nodes", "-subj"])
                .arg(format!("/CN={cn}"))
                .args(EC)
                .arg("-keyout")
                .arg(p("key"))
                .arg("-out")
                .arg(p("csr"))
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "{out:?}");
            std::fs::write(
                p("ext"),
                format!("subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage={usage}\n"),
            )
            .expect("ext");
            let out = Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(p("csr"))
                .arg("-CA")
                .arg(self.dir.path().join("ca.crt"))
                .arg("-CAkey")
                .arg(self.dir.path().join("ca.key"))
                .arg("-extfile")
                .arg(p("ext"))
                .arg("-out")
                .arg(p("crt"))
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "{} {out:?}", self.name);
            (
                std::fs::read(p("crt")).expect("crt"),
                std::fs::read(p("key")).expect("key"),
            )
        }
    }

    fn verified(ca: &Ca, required: bool, sans: &[&str]) -> ClientCertificate {
        ClientCertificate::Verified(ClientVerification {
            required,
            ca_secret: format!("Secret istio-system/{}", ca.name),
            ca_pem: ca.pem(),
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            certificate_sha256: Vec::new(),
            spki_sha256: Vec::new(),
            spiffe_trust_domain: None,
        })
    }

    /// A loopback listener and the future of `resolver`'s handshake on the first
    /// connection it accepts.
    async fn accept_one(
        resolver: &Arc<SniResolver>,
    ) -> (
        std::net::SocketAddr,
        impl std::future::Future<Output = Result<Accepted, Refused>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let r = resolver.clone();
        let accepted = async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let stream: Stream = Box::new(L4Stream::from(tcp));
            r.handshake(stream).await
        };
        (addr, accepted)
    }

    /// A rustls client handshake with `sni` against `resolver` over loopback TCP,
    /// optionally with a client certificate and limited to some versions or suites.
    /// Ok: (version, suite, the server's TlsConnection.server); Err: the server's
    /// refusal.
    async fn connect(
        resolver: &Arc<SniResolver>,
        roots: &[u8],
        sni: &str,
        client: Option<&(Vec<u8>, Vec<u8>)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        suites: Option<&[rustls::CipherSuite]>,
    ) -> Result<(rustls::ProtocolVersion, rustls::CipherSuite, String), Refused> {
        let (addr, accepted) = accept_one(resolver).await;
        let server = tokio::spawn(async move {
            let Accepted::Terminated(mut tls) = accepted.await? else {
                return Err(Refused::new(None, "passthrough"));
            };
            let conn = tls
                .get_ssl_digest()
                .and_then(|d| d.extension.get::<TlsConnection>().map(|c| c.server.clone()));
            // Hold the connection until the client has read its end.
            let _ = tls.write_all(b"x").await;
            let _ = tls.flush().await;
            Ok::<_, Refused>(conn.unwrap_or_default())
        });
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suites) = suites {
            provider
                .cipher_suites
                .retain(|s| suites.contains(&s.suite()));
        }
        let mut store = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(roots) {
            store.add(c.expect("pem")).expect("root");
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(store);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((c, k)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(c)
                        .collect::<Result<Vec<_>, _>>()
                        .expect("chain"),
                    PrivateKeyDer::from_pem_slice(k).expect("key"),
                )
                .expect("client cert"),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(sni.to_string()).expect("name");
        let client = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        let negotiated = client.map(|mut c| async move {
            // TLS 1.3 client certificates are checked after the client's last flight:
            // a refusal shows as an alert on the first read.
            let mut b = [0u8; 1];
            let read = c.read(&mut b).await;
            let (_, conn) = c.get_ref();
            (
                read,
                conn.protocol_version(),
                conn.negotiated_cipher_suite(),
            )
        });
        let negotiated = match negotiated {
            Ok(f) => Some(f.await),
            Err(_) => None,
        };
        let served = server.await.expect("server task")?;
        match negotiated {
            Some((Ok(1), Some(v), Some(s))) => Ok((v, s.suite(), served)),
            other => panic!("server accepted, client saw {other:?}"),
        }
    }

    #[tokio::test]
    async fn servers_on_one_port_keep_their_own_modes_versions_and_suites() {
        let ca = Ca::new("clients");
        let other = Ca::new("other");
        let server_ca = Ca::new("servers");
        let good = ca.leaf(
            "good",
            "DNS:good.client.test,URI:spiffe://td/ns/a/sa/b",
            "clientAuth",
        );
        let wrong_san = ca.leaf("wrong", "DNS:wrong.client.test", "clientAuth");
        let foreign = other.leaf("foreign", "DNS:good.client.test", "clientAuth");
        let cert = |n: &str| server_ca.leaf(n, &format!("DNS:{n}"), "serverAuth");
        let with = |name: &str, policy: TlsPolicy| {
            let mut s = server(name, &[name], Some(&cert(name)));
            s.policy = policy;
            s
        };
        let r = Arc::new(SniResolver::new());
        let errors = r.update(&TlsTermination {
            servers: vec![
                with(
                    "mutual.test",
                    TlsPolicy {
                        client_certificate: verified(&ca, true, &["spiffe://td/ns/a/sa/b"]),
                        ..TlsPolicy::default()
                    },
                ),
                with(
                    "optional.test",
                    TlsPolicy {
                        client_certificate: verified(&ca, false, &[]),
                        ..TlsPolicy::default()
                    },
                ),
                with("simple.test", TlsPolicy::default()),
                with(
                    "modern.test",
                    TlsPolicy {
                        min_version: TlsVersion::Tls13,
                        ..TlsPolicy::default()
                    },
                ),
                with(
                    "chacha.test",
                    TlsPolicy {
                        max_version: TlsVersion::Tls12,
                        cipher_suites: vec![CipherSuite::EcdheEcdsaChacha20Poly1305],
                        ..TlsPolicy::default()
                    },
                ),
                with(
                    "refused.test",
                    TlsPolicy {
                        client_certificate: ClientCertificate::Unavailable,
                        ..TlsPolicy::default()
                    },
                ),
            ],
            ..Default::default()
        });
        assert_eq!(errors, []);
        let roots = server_ca.pem();
        let both = &[&rustls::version::TLS13, &rustls::version::TLS12][..];
        let tls12 = &[&rustls::version::TLS12][..];
        let tls13 = &[&rustls::version::TLS13][..];

        // MUTUAL: the right certificate only.
        let ok = connect(&r, &roots, "mutual.test", Some(&good), both, None)
            .await
            .expect("good");
        assert_eq!(
            ok.2, "Gateway default/gw mutual.test",
            "TlsConnection stored"
        );
        for (client, why) in [
            (None, "peer sent no certificates"),
            (Some(&foreign), "UnknownIssuer"),
            (Some(&wrong_san), "include none of subjectAltNames"),
        ] {
            for versions in [tls12, tls13] {
                let e = connect(&r, &roots, "mutual.test", client, versions, None)
                    .await
                    .expect_err("refused");
                assert!(e.reason.contains(why), "{why}: {e}");
                assert_eq!(e.sni.as_deref(), Some("mutual.test"));
            }
        }
        // OPTIONAL_MUTUAL: none or a good one; a bad one is refused.
        connect(&r, &roots, "optional.test", None, both, None)
            .await
            .expect("none");
        connect(&r, &roots, "optional.test", Some(&wrong_san), both, None)
            .await
            .expect("any SAN");
        let e = connect(&r, &roots, "optional.test", Some(&foreign), both, None)
            .await
            .expect_err("foreign CA");
        assert!(e.reason.contains("UnknownIssuer"), "{e}");
        // SIMPLE on the same port asks for nothing.
        let ok = connect(&r, &roots, "simple.test", None, both, None)
            .await
            .expect("simple");
        assert_eq!(ok.0, rustls::ProtocolVersion::TLSv1_3);
        // Versions and suites per server.
        let e = connect(&r, &roots, "modern.test", None, tls12, None)
            .await
            .expect_err("1.2");
        assert_eq!(e.reason, "peer is incompatible: Tls12NotOfferedOrEnabled");
        let ok = connect(&r, &roots, "chacha.test", None, both, None)
            .await
            .expect("1.2");
        assert_eq!(
            (ok.0, ok.1),
            (
                rustls::ProtocolVersion::TLSv1_2,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )
        );
        let aes = [rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
        connect(&r, &roots, "chacha.test", None, both, Some(&aes))
            .await
            .expect_err("suite not allowed");
        // TLS 1.3 suites are not restricted when none is listed.
        let aes13 = [rustls::CipherSuite::TLS13_AES_256_GCM_SHA384];
        let ok = connect(&r, &roots, "modern.test", None, tls13, Some(&aes13))
            .await
            .expect("1.3");
        assert_eq!(ok.1, aes13[0]);
        // Unavailable checks and unknown names: an alert, nothing served.
        for sni in ["refused.test", "unknown.test"] {
            let e = connect(&r, &roots, sni, None, both, None)
                .await
                .expect_err("refused");
            assert!(e.reason.contains("no Gateway server"), "{e}");
        }
    }

    #[test]
    fn a_connection_admits_hosts_of_servers_with_its_settings() {
        let ca = Ca::new("admits");
        let mutual = TlsPolicy {
            client_certificate: verified(&ca, true, &[]),
            ..TlsPolicy::default()
        };
        let with = |sni: &[&str], policy: &TlsPolicy| {
            let mut s = server(sni[0], sni, None);
            s.policy = policy.clone();
            s
        };
        let tls = TlsTermination {
            servers: vec![
                with(&["a.test", "*.a.test"], &mutual),
                with(&["b.test"], &TlsPolicy::default()),
                with(&["c.test"], &mutual),
            ],
            ..Default::default()
        };
        let conn = |policy: &TlsPolicy| TlsConnection {
            server: String::new(),
            policy: Arc::new(policy.clone()),
            peer_identity: None,
            peer_cert_sha256: None,
        };
        let over_mutual = conn(&mutual);
        assert!(over_mutual.admits(&tls, "a.test"));
        assert!(over_mutual.admits(&tls, "X.A.test:8443"));
        assert!(over_mutual.admits(&tls, "c.test"), "same settings");
        assert!(!over_mutual.admits(&tls, "b.test"));
        let over_simple = conn(&TlsPolicy::default());
        assert!(
            !over_simple.admits(&tls, "a.test:443"),
            "no way around mTLS"
        );
        assert!(over_simple.admits(&tls, "b.test"));
        assert!(over_simple.admits(&tls, "unknown.test"), "left to routing");
    }

    #[test]
    fn client_checks_match_sans_and_pins() {
        // `San::matches` itself is tested with the reader, in the model.
        let ca = Ca::new("pins");
        let (pem, _) = ca.leaf("pinned", "DNS:p.test", "clientAuth");
        let der = CertificateDer::from_pem_slice(&pem).expect("pem").to_vec();
        let sha = |b: &[u8]| {
            <[u8; 32]>::try_from(hash_certificate(&CertificateDer::from(b.to_vec())))
                .expect("32 bytes")
        };
        let spki = der::subject_public_key_info(&der).expect("spki");
        let checks = |sans: &[&str], certs: Vec<[u8; 32]>, spkis: Vec<[u8; 32]>| ClientChecks {
            inner: WebPkiClientVerifier::no_client_auth(),
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            certificate_sha256: certs,
            spki_sha256: spkis,
            spiffe_prefix: None,
        };
        assert_eq!(checks(&["p.test"], vec![], vec![]).check(&der), Ok(()));
        let e = checks(&["q.test"], vec![], vec![]).check(&der).unwrap_err();
        assert_eq!(
            e,
            "its SANs [DNS:p.test] include none of subjectAltNames [q.test]"
        );
        // Certificate and key pins are ORed, and ANDed with the SANs.
        assert_eq!(checks(&[], vec![sha(&der)], vec![]).check(&der), Ok(()));
        assert_eq!(
            checks(&[], vec![[0; 32]], vec![sha(spki)]).check(&der),
            Ok(())
        );
        assert!(checks(&[], vec![[0; 32]], vec![[1; 32]])
            .check(&der)
            .is_err());
        assert!(checks(&["q.test"], vec![sha(&der)], vec![])
            .check(&der)
            .is_err());
    }

    #[test]
    fn an_unusable_client_ca_is_reported_against_its_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = openssl_cert(dir.path(), "s", EC);
        let mut s = server("s", &["s.test"], Some(&cert));
        s.policy.client_certificate = ClientCertificate::Verified(ClientVerification {
            required: true,
            ca_secret: "Secret istio-system/s-cacert".into(),
            ca_pem: b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n".to_vec(),
            subject_alt_names: Vec::new(),
            certificate_sha256: Vec::new(),
            spki_sha256: Vec::new(),
            spiffe_trust_domain: None,
        });
        let r = SniResolver::new();
        let errors = r.update(&TlsTermination {
            servers: vec![s],
            ..Default::default()
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].secret, "Secret istio-system/s-cacert");
        assert!(errors[0].reason.contains("CA certificate"), "{}", errors[0]);
        assert_eq!(
            served(&r, Some("s.test")),
            None,
            "refused, not served without checks"
        );
    }

    /// Feed `bytes` to a fresh connection of `resolver`, then half-close; returns
    /// the refusal and what the server wrote back.
    async fn feed(resolver: &Arc<SniResolver>, bytes: &[u8]) -> (Result<(), Refused>, Vec<u8>) {
        let (addr, accepted) = accept_one(resolver).await;
        let server = tokio::spawn(async move { accepted.await.map(|_| ()) });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client.write_all(bytes).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut back),
        )
        .await;
        let refused = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the server gives up on its own")
            .expect("server task");
        (refused, back)
    }

    #[tokio::test]
    async fn bad_first_bytes_are_refused_and_plain_http_gets_a_400() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = openssl_cert(dir.path(), "a.test", EC);
        let r = Arc::new(SniResolver::new());
        r.update(&TlsTermination {
            servers: vec![server("a", &["*"], Some(&pem))],
            ..Default::default()
        });
        let (refused, back) = feed(&r, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let refused = refused.expect_err("plain HTTP");
        assert!(refused.reason.contains("plain HTTP"), "{refused}");
        let text = String::from_utf8_lossy(&back);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(
            text.ends_with("Client sent an HTTP request to an HTTPS server.\r\n"),
            "{text}"
        );
        let declared: usize = text
            .split("content-length: ")
            .nth(1)
            .and_then(|t| t.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(declared, text.split_once("\r\n\r\n").expect("body").1.len());

        // Garbage, a truncated record, an empty connection: refused, no panic, and
        // nothing but (at most) an alert written back.
        let truncated: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00];
        let cases: [(&[u8], &str); 3] = [
            (b"\x00\xff garbage \x01\x02\x03", "bad ClientHello"),
            (truncated, "closed before its ClientHello"),
            (b"", "closed before its ClientHello"),
        ];
        for (bytes, why) in cases {
            let (refused, back) = feed(&r, bytes).await;
            let refused = refused.expect_err("refused");
            assert!(refused.reason.contains(why), "{bytes:?}: {refused}");
            assert!(back.len() <= 7, "{bytes:?}: {back:?}");
        }
        // The listener's resolver still serves a real client afterwards.
        assert!(r.certificate_for(Some("a.test")).is_some());
    }

    /// A ClientHello as rustls writes it for `sni` with the ALPN protocols `alpn`.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(sni.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    #[test]
    fn the_client_hello_reader_takes_bytes_in_any_pieces() {
        let hello = client_hello("A.Example.com", &[b"h2", b"http/1.1"]);
        for size in [1, 5, 7, 100, hello.len()] {
            let mut reader = ClientHelloReader::new();
            let mut got = None;
            for chunk in hello.chunks(size) {
                assert!(got.is_none(), "answered before the last piece");
                got = reader.feed(chunk).expect("a ClientHello");
                assert!(reader.buffered() <= ClientHelloReader::MAX_BYTES);
            }
            let got = got.expect("complete");
            assert_eq!(got.sni.as_deref(), Some("a.example.com"), "{size}");
            assert_eq!(got.bytes, hello, "every byte kept for the replay");
            assert!(!got.acme_tls_alpn);
        }
        let acme = client_hello("a.test", &[ACME_TLS_ALPN]);
        let got = ClientHelloReader::new().feed(&acme).expect("ok");
        assert!(got.expect("complete").acme_tls_alpn);

        // Plain HTTP: the 400, whatever follows the method.
        let bad = ClientHelloReader::new()
            .feed(b"GET / HTTP/1.1\r\n")
            .expect_err("plain HTTP");
        assert_eq!(bad.alert, PLAIN_HTTP_ANSWER);
        // A ClientHello of rustls' largest size, in records of 100 bytes: the
        // record headers take the bytes read past 64 KiB before it is whole, and it
        // is refused (by rustls' own buffer limit, which comes first, or by ours).
        let mut message = vec![0x01, 0x00, 0xff, 0xfb];
        message.resize(0xffff, 0);
        let mut stream = Vec::new();
        for piece in message.chunks(100) {
            stream.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, piece.len() as u8]);
            stream.extend_from_slice(piece);
        }
        let mut reader = ClientHelloReader::new();
        let mut refused = None;
        for chunk in stream.chunks(READ_SIZE) {
            match reader.feed(chunk) {
                Ok(None) => assert!(reader.buffered() <= ClientHelloReader::MAX_BYTES),
                Ok(Some(h)) => panic!("{h:?}"),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("refused");
        assert!(
            refused.reason == "ClientHello too large"
                || refused.reason.ends_with("message buffer full"),
            "{refused:?}"
        );
        assert!(refused.alert.is_empty());
        assert!(reader.buffered() <= ClientHelloReader::MAX_BYTES + READ_SIZE);
    }
}
