//! Our HTTP/1.1 proxy core, on Pingora's v1 server and client sessions (the codecs
//! stay Pingora's). It serves every HTTP/1 connection of every role; HTTP/2 from
//! clients (h2c prior knowledge, ALPN h2) is `h2.rs`, which shares the upstream
//! side here ([`HttpCore`]: pool, connects, request shaping) and decides with the
//! same [`RouterProxy::decide`].
//!
//! Per connection: wait until the client sends (an idle keep-alive connection holds
//! no session and no buffer), read one request, [`RouterProxy::decide`], answer
//! locally or forward, and loop while both sides keep the connection. Per request,
//! compared with Pingora's `ProxyHttp` (which we used before): no boxed hook
//! futures, no channels or spawned tasks, no pool lookup while the upstream
//! connection of the previous request still fits (the client connection holds it
//! while it is busy, and gives it back after 50 ms of silence), no `getpeername`,
//! the client's request header moved upstream rather than cloned.
//!
//! Semantics: hop-by-hop request headers are removed (RFC 9110 7.6.1, those the
//! `Connection` header names included) and WebSocket upgrades pass; a request body
//! of unknown length goes upstream chunked; `Expect: 100-continue` is answered here
//! (as nginx does) and not forwarded; a response of unknown length is re-framed
//! chunked so the client's connection stays usable. A request sent on a pooled
//! connection that turns out dead (closed before any response byte) is sent again
//! once on a new connection when it has no body. Errors: 503 `upstream connect
//! error` when no connection can be made, 502 when the upstream fails before its
//! response header, a closed downstream connection when it fails after.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http::{header, HeaderName, Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::protocols::http::v1::server::HttpSession as Downstream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType, Result};
use tracing::{debug, warn};

use crate::conn::TcpConn;
use crate::limits::Limits;
use crate::overload::{Overflow, Slot};
use crate::pool::{Pool, PoolKey};
use crate::proxy::{ConnInfo, Decision, RouterProxy, Target};

/// How long a client connection keeps the upstream connection of its last request
/// while it sends nothing; then the upstream connection goes back to the pool.
/// A busy keep-alive client sends its next request well within this; a burst of
/// clients that go idle holds few upstream connections (and descriptors) at once.
const HOLD_UPSTREAM_WHILE_IDLE: Duration = Duration::from_millis(50);

pub(crate) const UPSTREAM_CONNECT_ERROR: &str = "upstream connect error\n";
pub(crate) const BAD_GATEWAY: &str = "upstream error\n";
const BAD_REQUEST: &str = "bad request\n";
pub(crate) const BODY_TOO_LARGE: &str = "request body too large\n";

/// The error a request body over [`Limits::max_request_body`] ends with.
pub(crate) const BODY_LIMIT: ErrorType = ErrorType::Custom("request body over the limit");

/// The HTTP/1.1 proxy of one listener.
pub(crate) struct HttpCore {
    pub proxy: RouterProxy,
    pub pool: Arc<Pool>,
    /// The listener's limits and timeouts. Timers are tokio timers, armed only
    /// when a read has to wait (Pingora's own read timeout registers a timer on
    /// its clock thread for every read).
    pub limits: Arc<Limits>,
    /// Requests refused (malformed, over a limit): one warning per period.
    refusals: crate::limits::RateLog,
}

/// An upstream connection a downstream connection holds between its requests,
/// since when it is idle, and how many requests it carried.
type Held = Option<(PoolKey, Stream, Instant, u32)>;

/// A request that goes out on a connection idle at least this long keeps a copy
/// of its header, to be sent again on a new connection should that one turn out
/// closed by its upstream (keep-alive timeouts are seconds or more; a connection
/// that was just used and closed since is seen closed before it is taken).
pub(crate) const RETRY_COPY_AFTER: Duration = Duration::from_secs(1);

/// `keep-alive`, a hop-by-hop header some servers send.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

impl HttpCore {
    pub(crate) fn new(proxy: RouterProxy, limits: Arc<Limits>) -> HttpCore {
        HttpCore {
            proxy,
            pool: Pool::new(),
            limits,
            refusals: Default::default(),
        }
    }

    /// A request refused with `status` for `why`: a debug line each, and one
    /// warning (with the count) per period.
    pub(crate) fn refused(&self, status: u16, why: &str) {
        debug!(status, "request refused: {}", why.trim_end());
        if let Some(n) = self.refusals.due() {
            warn!(
                status,
                refused = n,
                "request refused: {} (one line per 10 s; the count is since the last)",
                why.trim_end()
            );
        }
    }

    /// Serve the requests of one client connection until either side ends it or
    /// the listener stops (idle connections are closed then; a request in flight
    /// is finished and answered with `Connection: close`).
    pub(crate) async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut shutdown = shutdown.clone();
        let mut held: Held = None;
        // The first request's head is due within the head timeout of the
        // connection's opening; a connection that never sends is closed then.
        let mut first = true;
        let mut served: u64 = 0;
        loop {
            let wait = if first {
                self.limits.request_head_timeout
            } else {
                HOLD_UPSTREAM_WHILE_IDLE
            };
            match next_request_arrives(&stream, &mut shutdown, wait).await {
                Arrival::Later if first => break,
                Arrival::Request => {}
                Arrival::Later => {
                    // An idle client gives its upstream connection back: idle
                    // clients hold one descriptor each, and the pool serves others.
                    if let Some((key, upstream, since, uses)) = held.take() {
                        self.pool.put(key, upstream, since, uses);
                    }
                    match next_request_arrives(&stream, &mut shutdown, self.limits.idle_timeout)
                        .await
                    {
                        Arrival::Request => {}
                        Arrival::Later | Arrival::End => break,
                    }
                }
                Arrival::End => break,
            }
            // The request's work on the heap, only while it runs: an idle
            // connection's task is then the size of this loop's state alone.
            served += 1;
            let last = self
                .limits
                .max_requests_per_connection
                .is_some_and(|max| served >= max);
            match Box::pin(self.one_request(stream, &mut shutdown, &mut held, first, last)).await {
                Some(next) => stream = next,
                None => break,
            }
            first = false;
        }
        if let Some((key, upstream, since, uses)) = held {
            self.pool.put(key, upstream, since, uses);
        }
    }

    /// Read one request on `stream`, answer it, and give the stream back if it can
    /// carry another (never after the `last` one the connection may carry).
    async fn one_request(
        &self,
        stream: Stream,
        shutdown: &mut ShutdownWatch,
        held: &mut Held,
        first: bool,
        last: bool,
    ) -> Option<Stream> {
        // On our TCP connections the head's first bytes are there already (see
        // `next_request_arrives`); a TLS connection waits for them in this read,
        // so between requests it gets the idle timeout.
        let head_timeout = if first || stream.as_any().is::<TcpConn>() {
            self.limits.request_head_timeout
        } else {
            self.limits.idle_timeout
        };
        let mut session = Downstream::new(stream);
        session.set_read_timeout(None);
        let read = tokio::select! {
            read = tokio::time::timeout(head_timeout, session.read_request()) => read,
            _ = shutdown.changed() => return None,
        };
        match read {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return None,
            Err(_) => {
                debug!("client did not send a whole request head within {head_timeout:?}; closed");
                return None;
            }
            Ok(Err(e)) => {
                if let Some(status) = refuse_request(&mut session, &e).await {
                    self.refused(status, "malformed request");
                }
                return None;
            }
        }
        if let Some((status, why)) = malformed(&session, &self.limits) {
            self.refused(status, why);
            session.set_server_keepalive(None);
            let _ = local(&mut session, status, "text/plain", why.into()).await;
            return None;
        }
        if last || *shutdown.borrow() {
            session.set_server_keepalive(None);
        }
        if !self.exchange(&mut session, held).await {
            return None;
        }
        match session.reuse().await {
            Ok(Some(next)) => Some(next.into_parts().0),
            _ => None,
        }
    }

    /// One request: decide, then answer or forward. `false`: the client
    /// connection cannot carry another request.
    async fn exchange(&self, ds: &mut Downstream, held: &mut Held) -> bool {
        let conn = ConnInfo::of(ds.digest(), self.proxy.needs_original());
        match self.proxy.decide(ds.req_header(), &conn).await {
            Decision::Forward(target) => self.forward(ds, &conn, target, held).await,
            Decision::Local(status, body) => local(ds, status, "text/plain", body.into()).await,
            Decision::Redirect(location) => redirect(ds, location).await,
            Decision::Acme(answer) => {
                local(
                    ds,
                    200,
                    "application/octet-stream",
                    answer.into_bytes().into(),
                )
                .await
            }
        }
    }

    async fn forward(
        &self,
        ds: &mut Downstream,
        conn: &ConnInfo,
        target: Target,
        held: &mut Held,
    ) -> bool {
        let key = PoolKey {
            addr: target.addr,
            mtls: target.mtls.clone(),
        };
        let has_body = !ds.is_body_empty();
        let expect_continue = has_body
            && ds
                .req_header()
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let upgrade = ds.is_upgrade_req();
        if has_body && body_over_limit(ds.req_header(), &self.limits) {
            self.refused(413, "Content-Length over the request body limit");
            ds.set_server_keepalive(None);
            return local(ds, 413, "text/plain", BODY_TOO_LARGE.into()).await;
        }
        let Ok(_slot) = self.admit(&target).await else {
            if has_body {
                ds.set_server_keepalive(None);
            }
            return overflow(ds).await;
        };
        let mut retried = false;
        let (mut us, uses) = loop {
            let (stream, idle_since, uses) = match self.upstream(&key, &target, held).await {
                Ok(found) => found,
                Err(e) => {
                    warn!(
                        cluster = target.cluster_name(),
                        upstream = %target.addr,
                        error = %e,
                        "upstream connect failed"
                    );
                    return local(ds, 503, "text/plain", UPSTREAM_CONNECT_ERROR.into()).await;
                }
            };
            // Only a bodiless request on a connection idle long enough to have been
            // closed by its upstream is sent again: it keeps its header for that.
            let may_retry = !retried
                && !has_body
                && idle_since.is_some_and(|t| t.elapsed() >= RETRY_COPY_AFTER);
            let request = match self.upstream_request(ds, conn, has_body, upgrade || may_retry) {
                Ok(request) => request,
                Err(e) => {
                    debug!(error = %e, "request cannot be forwarded");
                    ds.set_server_keepalive(None);
                    return local(ds, 400, "text/plain", BAD_REQUEST.into()).await;
                }
            };
            let mut us = Upstream::new(stream);
            match send(
                ds,
                &mut us,
                request,
                has_body,
                expect_continue,
                &self.limits,
            )
            .await
            {
                Ok(()) => break (us, uses),
                Err(Failure::Downstream(e)) if e.etype() == &BODY_LIMIT => {
                    // The upstream connection, with its truncated request, is
                    // dropped; the client is told why.
                    self.refused(413, "the request body went over the limit");
                    ds.set_server_keepalive(None);
                    let _ = local(ds, 413, "text/plain", BODY_TOO_LARGE.into()).await;
                    return false;
                }
                Err(Failure::Downstream(e)) => {
                    debug!(error = %e, "client failed while sending its request body");
                    // A body that breaks its framing (a bad chunk size) is answered
                    // 400; the upstream connection, with its truncated request, is
                    // dropped, never reused.
                    if !matches!(
                        e.etype(),
                        ErrorType::ReadError
                            | ErrorType::ConnectionClosed
                            | ErrorType::ReadTimedout
                            | ErrorType::WriteError
                    ) {
                        ds.set_server_keepalive(None);
                        let _ = local(ds, 400, "text/plain", BAD_REQUEST.into()).await;
                    }
                    return false;
                }
                // A pooled connection that died while idle: once more on a new one.
                Err(Failure::Upstream(e)) if may_retry => {
                    debug!(upstream = %target.addr, error = %e, "pooled connection failed; retrying on a new one");
                    retried = true;
                }
                Err(Failure::Upstream(e)) => {
                    warn!(cluster = target.cluster_name(), upstream = %target.addr, error = %e, "upstream failed before its response");
                    ds.set_server_keepalive(None);
                    return local(ds, 502, "text/plain", BAD_GATEWAY.into()).await;
                }
            }
        };

        // The response: header, then body (or bytes both ways after a 101).
        let Some(upstream_header) = us.resp_header() else {
            return false;
        };
        let mut resp = Box::new(upstream_header.clone());
        let head = ds.req_header().method == Method::HEAD;
        let no_body = head || matches!(resp.status.as_u16(), 204 | 304);
        if resp.headers.contains_key(&KEEP_ALIVE) {
            resp.remove_header(&KEEP_ALIVE);
        }
        if !no_body
            && resp.status != 101
            && !resp.headers.contains_key(header::TRANSFER_ENCODING)
            && !resp.headers.contains_key(header::CONTENT_LENGTH)
            && !us.is_body_done()
        {
            // Close-delimited upstream (HTTP/1.0 style): chunked downstream keeps the
            // client's connection.
            resp.set_version(Version::HTTP_11);
            if resp
                .insert_header(header::TRANSFER_ENCODING, "chunked")
                .is_err()
            {
                return false;
            }
        }
        let upgraded = resp.status == 101;
        if let Err(e) = ds.write_response_header(resp).await {
            debug!(error = %e, "cannot write the response header to the client");
            return false;
        }
        if upgraded && ds.was_upgraded() {
            us.maybe_upgrade_body_writer();
            relay_upgraded(ds, &mut us).await;
            return false;
        }
        loop {
            match us.read_body_bytes().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = ds.write_body(&chunk).await {
                        debug!(error = %e, "client failed while receiving the response");
                        return false;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(cluster = target.cluster_name(), upstream = %target.addr, error = %e, "upstream failed during its response body");
                    return false;
                }
            }
        }
        if let Err(e) = ds.finish_body().await {
            debug!(error = %e, "client failed while receiving the response");
            return false;
        }
        us.respect_keepalive();
        let uses = uses + 1;
        if target.may_reuse_after(uses) {
            if let Some(stream) = us.reuse().await {
                let now = Instant::now();
                if let Some((old_key, old, since, old_uses)) =
                    held.replace((key, stream, now, uses))
                {
                    self.pool.put(old_key, old, since, old_uses);
                }
            }
        }
        true
    }

    /// A place for a request to `target`'s cluster under its DestinationRule
    /// `connectionPool` limits (`None`: the cluster has none), or refused.
    pub(crate) async fn admit(&self, target: &Target) -> Result<Option<Slot>, Overflow> {
        match target.limited_pool() {
            None => Ok(None),
            Some((name, pool)) => {
                crate::overload::admit(name, pool, self.limits.connect_timeout).await
            }
        }
    }

    /// A connection to `key`: the one this client connection held, else a pooled
    /// one (with since when it is idle), else a new one; and the requests it
    /// carried.
    pub(crate) async fn upstream(
        &self,
        key: &PoolKey,
        target: &Target,
        held: &mut Held,
    ) -> Result<(Stream, Option<Instant>, u32)> {
        if let Some((k, mut stream, since, uses)) = held.take() {
            if k != *key {
                self.pool.put(k, stream, since, uses);
            } else if crate::conn::idle_alive(&mut stream) {
                return Ok((stream, Some(since), uses));
            }
        }
        if let Some((stream, since, uses)) = self.pool.take(key) {
            return Ok((stream, Some(since), uses));
        }
        Ok((self.connect(target).await?, None, 0))
    }

    /// A new connection for `target`: TCP, then mesh mTLS when the endpoint has an
    /// identity (never plaintext then).
    async fn connect(&self, target: &Target) -> Result<Stream> {
        let timeout = target
            .connect_timeout()
            .unwrap_or(self.limits.connect_timeout);
        let tcp = crate::conn::connect(target.addr, self.proxy.mark(), timeout)
            .await
            .map_err(|e| Error::because(ErrorType::ConnectError, "connecting upstream", e))?;
        let tcp = TcpConn::new(tcp);
        if target.mtls.is_none() {
            return Ok(Box::new(tcp));
        }
        let (config, server_name) = self.proxy.mesh_client(target).ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                "no workload certificate for mesh mTLS yet",
            )
        })?;
        let tls = tokio::time::timeout(
            timeout,
            crate::conn::MeshTls::connect(tcp, config, server_name),
        )
        .await
        .map_err(|_| Error::explain(ErrorType::ConnectTimedout, "mTLS handshake timed out"))?
        .map_err(|e| Error::because(ErrorType::TLSHandshakeFailure, "mesh mTLS handshake", e))?;
        Ok(Box::new(tls))
    }

    /// The request as it goes upstream: HTTP/1.1, without hop-by-hop headers
    /// (WebSocket upgrades kept), framed, with the role's headers. The client's
    /// header is moved out of its session (which keeps its method and version,
    /// all it still needs), or copied when `keep` (an upgrade, a possible retry).
    fn upstream_request(
        &self,
        ds: &mut Downstream,
        conn: &ConnInfo,
        has_body: bool,
        keep: bool,
    ) -> Result<Box<RequestHeader>> {
        let upgrade = ds.is_upgrade_req();
        let mut up = if keep {
            Box::new(ds.req_header().clone())
        } else {
            let req = ds.req_header_mut();
            let mut stub = RequestHeader::build_no_case(req.method.clone(), b"/", Some(0))?;
            stub.set_version(req.version);
            Box::new(std::mem::replace(req, stub))
        };
        up.set_version(Version::HTTP_11);
        authority_to_host(&mut up)?;
        strip_hop_by_hop(&mut up, upgrade)?;
        h1_request_framing(&mut up, has_body)?;
        self.proxy.upstream_headers(&mut up, conn)?;
        Ok(up)
    }
}

/// A request with a body goes upstream with its length or chunked; `Expect` is
/// not forwarded (`100 Continue` is answered here).
pub(crate) fn h1_request_framing(up: &mut RequestHeader, has_body: bool) -> Result<()> {
    if has_body {
        if up.headers.contains_key(header::EXPECT) {
            up.remove_header(&header::EXPECT);
        }
        if !up.headers.contains_key(header::CONTENT_LENGTH) {
            up.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
    }
    Ok(())
}

/// A request whose target names its authority goes upstream in origin form with
/// that authority as its `Host`: HTTP/2 `:authority`, and HTTP/1.1 absolute form
/// (RFC 9112 3.2.2; Pingora's parser has already refused one whose `Host` differs,
/// or with userinfo, and keeps only the path in the URI, the raw target aside).
/// Userinfo in the authority is refused.
pub(crate) fn authority_to_host(up: &mut RequestHeader) -> Result<()> {
    let Some(authority) = up.uri.authority() else {
        if up.raw_path().first().is_some_and(|b| *b != b'/') && up.method != Method::CONNECT {
            // Absolute form: send the path the URI kept, not the raw target.
            let origin = up.uri.clone();
            up.set_uri(origin);
        }
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "userinfo in the authority");
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "authority", e))?;
    let origin = up.uri.path_and_query().map_or_else(
        || http::Uri::from_static("/"),
        |p| http::Uri::try_from(p.as_str()).unwrap_or_else(|_| http::Uri::from_static("/")),
    );
    up.insert_header(header::HOST, host)?;
    up.set_uri(origin);
    Ok(())
}

/// Whether a request's declared `Content-Length` is over the body limit.
pub(crate) fn body_over_limit(req: &RequestHeader, limits: &Limits) -> bool {
    let Some(max) = limits.max_request_body else {
        return false;
    };
    req.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len > max)
}

/// What the edge refuses in any request head, HTTP/1 or HTTP/2: more header fields
/// than allowed (431, Envoy's `max_headers_count`), a request target over the
/// length limit (414, as nginx), an absolute-form target of another scheme than
/// `http`/`https` or with userinfo (400).
pub(crate) fn over_limits(req: &RequestHeader, limits: &Limits) -> Option<(u16, &'static str)> {
    if req.headers.len() > limits.max_request_headers {
        return Some((431, "request header fields too large: too many fields\n"));
    }
    if req.raw_path().len() > limits.max_uri_length {
        return Some((414, "URI too long\n"));
    }
    if req
        .uri
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Some((400, "bad request: userinfo in the request target\n"));
    }
    let scheme = req.uri.scheme_str().map(str::as_bytes).or_else(|| {
        // HTTP/1.1 absolute form: Pingora keeps only the path in the URI.
        // An origin-form target (every ordinary request) is not scanned.
        let raw = req.raw_path();
        if raw.first() == Some(&b'/') {
            return None;
        }
        let end = raw.windows(3).position(|w| w == b"://")?;
        Some(&raw[..end])
    });
    if scheme.is_some_and(|s| !s.eq_ignore_ascii_case(b"http") && !s.eq_ignore_ascii_case(b"https"))
    {
        return Some((
            400,
            "bad request: the request target's scheme is not http or https\n",
        ));
    }
    None
}

/// Whose side failed while the request was being sent.
enum Failure {
    Downstream(Box<Error>),
    Upstream(Box<Error>),
}

/// Send the request header and body upstream and read the response header (1xx
/// other than 101 skipped: `100 Continue` was answered here).
async fn send(
    ds: &mut Downstream,
    us: &mut Upstream,
    request: Box<RequestHeader>,
    has_body: bool,
    expect_continue: bool,
    limits: &Limits,
) -> std::result::Result<(), Failure> {
    us.write_request_header(request)
        .await
        .map_err(Failure::Upstream)?;
    if has_body {
        // Pingora's server session turns keep-alive off for any response written
        // before the request body is read, a 100 Continue too: put it back once the
        // body has been read whole.
        let keepalive = expect_continue && ds.will_keepalive();
        if expect_continue {
            ds.write_continue_response()
                .await
                .map_err(Failure::Downstream)?;
        }
        let mut left = limits.max_request_body.unwrap_or(u64::MAX);
        while let Some(chunk) = tokio::time::timeout(limits.body_timeout, ds.read_body_bytes())
            .await
            .map_err(|_| {
                Failure::Downstream(Error::explain(
                    ErrorType::ReadTimedout,
                    "client request body stalled",
                ))
            })?
            .map_err(Failure::Downstream)?
        {
            left = left
                .checked_sub(chunk.len() as u64)
                .ok_or_else(|| Failure::Downstream(Error::new(BODY_LIMIT)))?;
            us.write_body(&chunk).await.map_err(Failure::Upstream)?;
        }
        if keepalive {
            ds.set_server_keepalive(Some(0));
        }
        us.finish_body().await.map_err(Failure::Upstream)?;
    }
    read_final_response(us).await.map_err(Failure::Upstream)
}

/// Read the upstream's response header, skipping 1xx other than 101 (`100
/// Continue` is answered to the client by the proxy itself).
pub(crate) async fn read_final_response(us: &mut Upstream) -> Result<()> {
    loop {
        us.read_response().await?;
        match us.get_status() {
            Some(s) if s.is_informational() && s.as_u16() != 101 => continue,
            _ => return Ok(()),
        }
    }
}

/// After a 101: bytes both ways until either side closes.
async fn relay_upgraded(ds: &mut Downstream, us: &mut Upstream) {
    let mut up_open = true;
    let mut down_open = true;
    while up_open || down_open {
        tokio::select! {
            read = ds.read_body_bytes(), if down_open => match read {
                Ok(Some(bytes)) => {
                    if us.write_body(&bytes).await.is_err() {
                        return;
                    }
                }
                _ => {
                    down_open = false;
                    let _ = us.finish_body().await;
                }
            },
            read = us.read_body_bytes(), if up_open => match read {
                Ok(Some(bytes)) => {
                    if ds.write_body(&bytes).await.is_err() {
                        return;
                    }
                }
                _ => {
                    up_open = false;
                    let _ = ds.finish_body().await;
                }
            },
        }
    }
}

/// Hop-by-hop request headers (RFC 9110 7.6.1) and those `Connection` names; a
/// WebSocket upgrade keeps `Connection: Upgrade` and its `Upgrade`.
pub(crate) fn strip_hop_by_hop(req: &mut RequestHeader, upgrade: bool) -> Result<()> {
    const HOP: [HeaderName; 8] = [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::HeaderName::from_static("keep-alive"),
    ];
    const OTHER: [&str; 2] = ["proxy-connection", "http2-settings"];
    // Most requests have none of them: look before removing.
    let any = req
        .headers
        .keys()
        .any(|k| HOP.contains(k) || OTHER.contains(&k.as_str()));
    if !any {
        return Ok(());
    }
    let upgrade_value = if upgrade {
        req.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let mut nominated: Vec<HeaderName> = Vec::new();
    for value in req.headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if let Ok(name) = HeaderName::from_bytes(token) {
                if name == header::HOST || name.as_str().starts_with("x-forwarded-") {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "Connection names a header that cannot be dropped",
                    ));
                }
                nominated.push(name);
            }
        }
    }
    for name in nominated.iter().chain(HOP.iter()) {
        req.remove_header(name);
    }
    for name in OTHER {
        req.remove_header(name);
    }
    if let Some(value) = upgrade_value {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        req.insert_header(header::UPGRADE, value)?;
    }
    Ok(())
}

/// What happened while a client connection was idle.
enum Arrival {
    /// It sent something (or closed: the read will tell).
    Request,
    /// Nothing within the wait.
    Later,
    /// The listener stops.
    End,
}

/// Wait up to `wait` until the client sends its next request. On our own TCP
/// connections this waits for readiness alone (no session, no buffer); a TLS
/// connection is waited on by the session's read.
async fn next_request_arrives(
    stream: &Stream,
    shutdown: &mut ShutdownWatch,
    wait: Duration,
) -> Arrival {
    if *shutdown.borrow() {
        return Arrival::End;
    }
    let Some(tcp) = stream.as_any().downcast_ref::<TcpConn>() else {
        return Arrival::Request;
    };
    tokio::select! {
        biased;
        ready = tcp.readable() => match ready {
            Ok(()) => Arrival::Request,
            Err(_) => Arrival::End,
        },
        _ = shutdown.changed() => Arrival::End,
        _ = tokio::time::sleep(wait) => Arrival::Later,
    }
}

/// What the edge refuses in a request Pingora's parser accepted: [`over_limits`],
/// a head over [`Limits::max_request_head`] (431), an HTTP/1.1 request without
/// `Host` (400, RFC 9112 3.2), `Content-Length` together with `Transfer-Encoding`
/// (400: the smuggling shape RFC 9112 6.3 says to treat as an error; Envoy's
/// default). Pingora drops such a `Content-Length` while parsing, so the raw head
/// is searched, and only when `Transfer-Encoding` is there.
fn malformed(ds: &Downstream, limits: &Limits) -> Option<(u16, &'static str)> {
    let req = ds.req_header();
    if let Some(refused) = over_limits(req, limits) {
        return Some(refused);
    }
    let raw = ds.get_headers_raw_bytes();
    if raw.len() > limits.max_request_head {
        return Some((431, "request header fields too large\n"));
    }
    if req.version == Version::HTTP_11 && !req.headers.contains_key(header::HOST) {
        return Some((400, "bad request: no Host header\n"));
    }
    if req.headers.contains_key(header::TRANSFER_ENCODING)
        && raw
            .split(|b| *b == b'\n')
            .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
    {
        return Some((
            400,
            "bad request: both Content-Length and Transfer-Encoding\n",
        ));
    }
    None
}

/// A request that could not be read: 400 for a malformed one (431 for one over
/// Pingora's own header limits), nothing for a client that went away or timed out.
/// The status sent, if any.
async fn refuse_request(ds: &mut Downstream, e: &Error) -> Option<u16> {
    match e.etype() {
        ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::ReadTimedout => {
            debug!(error = %e, "client connection ended before a whole request");
            None
        }
        _ => {
            debug!(error = %e, "malformed request");
            ds.set_server_keepalive(None);
            let text = format!("{e:?}");
            let too_large = text.contains("TooManyHeaders") || text.contains("larger than");
            let (status, body) = if too_large {
                (431, "request header fields too large\n".to_string())
            } else if unsupported_version(e) {
                (505, "HTTP version not supported\n".to_string())
            } else if let Some(why) = target_refusal(e) {
                (400, format!("bad request: {why}\n"))
            } else {
                (400, BAD_REQUEST.to_string())
            };
            let _ = local(ds, status, "text/plain", body.into()).await;
            Some(status)
        }
    }
}

/// Why Pingora refused a request target or its authority (absolute form whose
/// `Host` differs, userinfo, an ambiguous authority), to say so in the 400.
fn target_refusal(e: &Error) -> Option<String> {
    let why = e.context.as_ref()?.to_string();
    let about_target = why.contains("authority") || why.contains("request target");
    (about_target && why.len() < 120 && why.is_ascii()).then_some(why)
}

/// Whether a request line that could not be parsed names an HTTP version other
/// than 1.x (`GET / HTTP/2.0` sent as text, `HTTP/3`): 505 rather than 400 (RFC
/// 9110 15.6.6). Pingora keeps the unparsed head, escaped, in the error's context.
fn unsupported_version(e: &Error) -> bool {
    let Some(context) = e.context.as_ref().map(|c| c.to_string()) else {
        return false;
    };
    let line = context
        .split("\\r\\n")
        .next()
        .unwrap_or("")
        .split("\\n")
        .next()
        .unwrap_or("");
    line.rfind(" HTTP/").is_some_and(|i| {
        line[i + 6..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() && c != '1')
    })
}

/// Answer locally. `false`: the client connection failed.
async fn local(ds: &mut Downstream, status: u16, content_type: &str, body: bytes::Bytes) -> bool {
    let sent = async {
        let mut resp = ResponseHeader::build(status, Some(3))?;
        resp.insert_header(header::CONTENT_TYPE, content_type)?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        ds.write_response_header(Box::new(resp)).await?;
        ds.write_body(&body).await?;
        ds.finish_body().await?;
        Ok::<_, Box<Error>>(())
    };
    match sent.await {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "cannot answer the client");
            false
        }
    }
}

/// 503 for a request a circuit breaker refused, as Envoy answers it (flag `UO`).
async fn overflow(ds: &mut Downstream) -> bool {
    let sent = async {
        let body = crate::overload::OVERFLOW;
        let mut resp = ResponseHeader::build(503, Some(4))?;
        resp.insert_header(header::CONTENT_TYPE, "text/plain")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header("x-envoy-overloaded", "true")?;
        ds.write_response_header(Box::new(resp)).await?;
        ds.write_body(body.as_bytes()).await?;
        ds.finish_body().await?;
        Ok::<_, Box<Error>>(())
    };
    sent.await.is_ok()
}

/// 301 to `location`, empty body.
async fn redirect(ds: &mut Downstream, location: String) -> bool {
    let sent = async {
        let mut resp = ResponseHeader::build(301, Some(2))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        ds.write_response_header(Box::new(resp)).await?;
        ds.finish_body().await?;
        Ok::<_, Box<Error>>(())
    };
    sent.await.is_ok()
}
