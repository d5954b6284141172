//! HTTP/2 from clients (h2c prior knowledge, ALPN h2) in our proxy core: Pingora's
//! h2 codec and server sessions, our accept loop, [`RouterProxy::decide`] and the
//! HTTP/1.1 upstream side of [`HttpCore`] (the same pool, connects and request
//! shaping as HTTP/1). Per connection the connection facts (`ConnInfo`) are read
//! once; per stream one task (streams of a connection run concurrently), no boxed
//! hooks, no channels; the client's request header is moved upstream, not cloned.
//!
//! An HTTP/2 request goes upstream as HTTP/1.1 with `Host` from `:authority`; the
//! response's HTTP/1 connection headers are dropped by Pingora's h2 writer. On a
//! listener shutdown the connection gets a GOAWAY and its streams finish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::protocols::http::v2::server::{self as h2server, H2Accept, HttpSession as H2Session};
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use pingora::{Error, Result};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::h1::{
    authority_to_host, body_over_limit, h1_request_framing, over_limits, read_final_response,
    strip_hop_by_hop, HttpCore, BAD_GATEWAY, BODY_LIMIT, BODY_TOO_LARGE, RETRY_COPY_AFTER,
    UPSTREAM_CONNECT_ERROR,
};
use crate::pool::PoolKey;
use crate::proxy::{ConnInfo, Decision, Target};

impl HttpCore {
    /// Serve the streams of one HTTP/2 client connection until it closes (or, after
    /// the listener stops, until its streams are done).
    pub(crate) async fn serve_h2(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let conn_info = Arc::new(ConnInfo::of(&digest, self.proxy.needs_original()));
        let mut options = h2server::default_h2_options();
        options.max_concurrent_streams(self.limits.h2_max_concurrent_streams);
        let mut conn = match h2server::handshake(stream, Some(options)).await {
            Ok(conn) => conn,
            Err(e) => {
                debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
        };
        let mut shutdown = shutdown.clone();
        let mut draining = false;
        // Streams in flight, and when the last one ended: a connection without
        // streams for the idle timeout is closed (GOAWAY). One timer per idle
        // period, not per stream.
        let active = Arc::new(ActiveStreams::new());
        let idle = self.limits.idle_timeout;
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        let mut streams: u64 = 0;
        loop {
            let accepted = if draining {
                H2Session::from_h2_conn(&mut conn, digest.clone()).await
            } else {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        conn.graceful_shutdown();
                        draining = true;
                        continue;
                    }
                    () = &mut idle_timer => {
                        match active.idle_since() {
                            Some(since) if since.elapsed() >= idle => {
                                debug!("HTTP/2 connection without streams for {idle:?}; closed");
                                conn.graceful_shutdown();
                                draining = true;
                            }
                            Some(since) => idle_timer.as_mut().reset(since + idle),
                            None => idle_timer.as_mut().reset(Instant::now() + idle),
                        }
                        continue;
                    }
                    accepted = H2Session::from_h2_conn(&mut conn, digest.clone()) => accepted,
                }
            };
            match accepted {
                Ok(Some(H2Accept::Session(session))) => {
                    let core = self.clone();
                    let info = conn_info.clone();
                    let guard = active.start();
                    tokio::spawn(async move {
                        core.h2_stream(session, &info).await;
                        drop(guard);
                    });
                    streams += 1;
                    if !draining
                        && self
                            .limits
                            .max_requests_per_connection
                            .is_some_and(|max| streams >= max)
                    {
                        // The connection's last stream: GOAWAY, the client opens
                        // another connection for more.
                        conn.graceful_shutdown();
                        draining = true;
                    }
                }
                Ok(Some(H2Accept::Rejected)) => continue,
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "HTTP/2 connection ended");
                    return;
                }
            }
        }
    }

    async fn h2_stream(&self, mut s: H2Session, conn: &ConnInfo) {
        if let Some((status, why)) = over_limits(s.req_header(), &self.limits) {
            self.refused(status, why);
            let _ = h2_local(
                &mut s,
                status,
                "text/plain",
                Bytes::from_static(why.as_bytes()),
            )
            .await;
            return;
        }
        let decision = self.proxy.decide(s.req_header(), conn).await;
        let sent = match decision {
            Decision::Forward(target) => return self.h2_forward(&mut s, conn, target).await,
            Decision::Local(status, body) => {
                h2_local(
                    &mut s,
                    status,
                    "text/plain",
                    Bytes::from_static(body.as_bytes()),
                )
                .await
            }
            Decision::Acme(answer) => {
                h2_local(&mut s, 200, "application/octet-stream", answer.into()).await
            }
            Decision::Redirect(location) => {
                async {
                    let mut resp = ResponseHeader::build(301, Some(2))?;
                    resp.insert_header(header::LOCATION, location)?;
                    resp.insert_header(header::CONTENT_LENGTH, 0)?;
                    s.write_response_header(Box::new(resp), true)
                }
                .await
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "cannot answer the HTTP/2 client");
        }
    }

    async fn h2_forward(&self, s: &mut H2Session, conn: &ConnInfo, target: Target) {
        let key = PoolKey {
            addr: target.addr,
            mtls: target.mtls.clone(),
        };
        let has_body = !s.is_body_empty();
        let head = s.req_header().method == Method::HEAD;
        if has_body && body_over_limit(s.req_header(), &self.limits) {
            self.refused(413, "content-length over the request body limit");
            let _ = h2_local(s, 413, "text/plain", BODY_TOO_LARGE.into()).await;
            return;
        }
        let Ok(_slot) = self.admit(&target).await else {
            let sent = async {
                let body = crate::overload::OVERFLOW;
                let mut resp = ResponseHeader::build(503, Some(4))?;
                resp.insert_header(header::CONTENT_TYPE, "text/plain")?;
                resp.insert_header(header::CONTENT_LENGTH, body.len())?;
                resp.insert_header("x-envoy-overloaded", "true")?;
                s.write_response_header(Box::new(resp), head)?;
                if !head {
                    s.write_body(Bytes::from_static(body.as_bytes()), true)
                        .await?;
                }
                Ok::<_, Box<Error>>(())
            };
            if let Err(e) = sent.await {
                debug!(error = %e, "cannot answer the HTTP/2 client");
            }
            return;
        };
        let mut retried = false;
        let (mut us, uses) = loop {
            let mut none = None;
            let (stream, idle_since, uses) = match self.upstream(&key, &target, &mut none).await {
                Ok(found) => found,
                Err(e) => {
                    warn!(cluster = target.cluster_name(), upstream = %target.addr, error = %e, "upstream connect failed");
                    let _ = h2_local(s, 503, "text/plain", UPSTREAM_CONNECT_ERROR.into()).await;
                    return;
                }
            };
            let may_retry = !retried
                && !has_body
                && idle_since.is_some_and(|t| t.elapsed() >= RETRY_COPY_AFTER);
            let request = match self.h2_upstream_request(s, conn, has_body, may_retry) {
                Ok(request) => request,
                Err(e) => {
                    debug!(error = %e, "request cannot be forwarded");
                    let _ = h2_local(s, 400, "text/plain", "bad request\n".into()).await;
                    return;
                }
            };
            let mut us = Upstream::new(stream);
            match h2_send(s, &mut us, request, has_body, &self.limits).await {
                Ok(()) => break (us, uses),
                Err(Side::Client(e)) if e.etype() == &BODY_LIMIT => {
                    self.refused(413, "the request body went over the limit");
                    let _ = h2_local(s, 413, "text/plain", BODY_TOO_LARGE.into()).await;
                    return;
                }
                Err(Side::Client(e)) => {
                    debug!(error = %e, "client failed while sending its request body");
                    return;
                }
                Err(Side::Upstream(e)) if may_retry => {
                    debug!(upstream = %target.addr, error = %e, "pooled connection failed; retrying on a new one");
                    retried = true;
                }
                Err(Side::Upstream(e)) => {
                    warn!(cluster = target.cluster_name(), upstream = %target.addr, error = %e, "upstream failed before its response");
                    let _ = h2_local(s, 502, "text/plain", BAD_GATEWAY.into()).await;
                    return;
                }
            }
        };
        let Some(upstream_header) = us.resp_header() else {
            return;
        };
        let resp = Box::new(upstream_header.clone());
        let no_body = head || matches!(resp.status.as_u16(), 204 | 304) || us.is_body_done();
        if let Err(e) = s.write_response_header(resp, no_body) {
            debug!(error = %e, "cannot write the response header to the HTTP/2 client");
            return;
        }
        if !no_body {
            loop {
                match us.read_body_bytes().await {
                    Ok(Some(chunk)) => {
                        let end = us.is_body_done();
                        if let Err(e) = s.write_body(chunk, end).await {
                            debug!(error = %e, "HTTP/2 client failed while receiving the response");
                            return;
                        }
                        if end {
                            break;
                        }
                    }
                    Ok(None) => {
                        if let Err(e) = s.write_body(Bytes::new(), true).await {
                            debug!(error = %e, "HTTP/2 client failed while receiving the response");
                            return;
                        }
                        break;
                    }
                    Err(e) => {
                        warn!(cluster = target.cluster_name(), upstream = %target.addr, error = %e, "upstream failed during its response body");
                        s.shutdown();
                        return;
                    }
                }
            }
        }
        us.respect_keepalive();
        let uses = uses + 1;
        if target.may_reuse_after(uses) {
            if let Some(stream) = us.reuse().await {
                self.pool.put(key, stream, Instant::now(), uses);
            }
        }
    }

    /// The stream's request as an HTTP/1.1 request upstream: `Host` from
    /// `:authority`, origin-form target, hop-by-hop headers dropped, framed, with
    /// the role's headers. Moved out of the stream's session, or copied when
    /// `keep` (a possible retry).
    fn h2_upstream_request(
        &self,
        s: &mut H2Session,
        conn: &ConnInfo,
        has_body: bool,
        keep: bool,
    ) -> Result<Box<RequestHeader>> {
        let mut up = if keep {
            Box::new(s.req_header().clone())
        } else {
            let req = s.req_header_mut();
            let stub = RequestHeader::build_no_case(req.method.clone(), b"/", Some(0))?;
            Box::new(std::mem::replace(req, stub))
        };
        authority_to_host(&mut up)?;
        up.set_version(Version::HTTP_11);
        strip_hop_by_hop(&mut up, false)?;
        h1_request_framing(&mut up, has_body)?;
        self.proxy.upstream_headers(&mut up, conn)?;
        Ok(up)
    }
}

enum Side {
    Client(Box<Error>),
    Upstream(Box<Error>),
}

/// The request header and body upstream, then the response header (1xx skipped).
async fn h2_send(
    s: &mut H2Session,
    us: &mut Upstream,
    request: Box<RequestHeader>,
    has_body: bool,
    limits: &crate::limits::Limits,
) -> std::result::Result<(), Side> {
    us.write_request_header(request)
        .await
        .map_err(Side::Upstream)?;
    if has_body {
        let mut left = limits.max_request_body.unwrap_or(u64::MAX);
        while let Some(chunk) = tokio::time::timeout(limits.body_timeout, s.read_body_bytes())
            .await
            .map_err(|_| {
                Side::Client(Error::explain(
                    pingora::ErrorType::ReadTimedout,
                    "client request body stalled",
                ))
            })?
            .map_err(Side::Client)?
        {
            left = left
                .checked_sub(chunk.len() as u64)
                .ok_or_else(|| Side::Client(Error::new(BODY_LIMIT)))?;
            us.write_body(&chunk).await.map_err(Side::Upstream)?;
        }
        us.finish_body().await.map_err(Side::Upstream)?;
    }
    read_final_response(us).await.map_err(Side::Upstream)
}

/// Answer a stream locally.
async fn h2_local(s: &mut H2Session, status: u16, content_type: &str, body: Bytes) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    let head = s.req_header().method == Method::HEAD;
    s.write_response_header(Box::new(resp), head || body.is_empty())?;
    if !head && !body.is_empty() {
        s.write_body(body, true).await?;
    }
    Ok(())
}

/// The streams of one HTTP/2 connection in flight, and since when none is, in one
/// atomic word (the count in the low [`COUNT_BITS`] bits, the time the last stream
/// in flight ended above them, in milliseconds since `base`): a stream's start is
/// an increment, its end a compare-and-swap, and the clock is read only when the
/// last stream in flight ends.
struct ActiveStreams {
    state: AtomicU64,
    base: Instant,
}

/// Bits of [`ActiveStreams::state`] that count streams (more than HTTP/2's
/// concurrent streams allow).
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl ActiveStreams {
    /// A new connection: no stream, idle from now.
    fn new() -> ActiveStreams {
        ActiveStreams {
            state: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// A stream starts; the guard ends it.
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.state.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Since when no stream is in flight (`None`: some are).
    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.load(Ordering::Acquire);
        (state & COUNT_MASK == 0)
            .then(|| self.base + std::time::Duration::from_millis(state >> COUNT_BITS))
    }
}

struct StreamGuard(Arc<ActiveStreams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.0;
        let mut now_ms = None;
        let _ = streams
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                if state & COUNT_MASK == 1 {
                    let ms = *now_ms.get_or_insert_with(|| {
                        u64::try_from(streams.base.elapsed().as_millis()).unwrap_or(0)
                    });
                    Some(ms.min(u64::MAX >> COUNT_BITS) << COUNT_BITS)
                } else {
                    Some(state - 1)
                }
            });
    }
}
