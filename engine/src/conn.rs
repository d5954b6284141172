//! Our own TCP transport under Pingora's HTTP/1 codecs: [`TcpConn`] is a tokio
//! socket that implements Pingora's `IO` traits, so a `Box<TcpConn>` is a Pingora
//! `Stream` that the v1 server and client sessions read and write directly, and
//! that we can take back between requests. What it owns:
//! - **no read buffer**: the sessions read straight from the socket (Pingora's L4
//!   stream copies through a 64 KiB buffer held for the connection's life);
//! - a **write buffer only while a message is being written**, so a response header
//!   and a small body leave in one `sendto`; it is freed on flush, so an idle
//!   connection holds no buffer at all;
//! - [`TcpConn::readable`]: waiting for the next request without a session or a
//!   buffer (idle keep-alive connections cost the socket and this struct);
//! - the socket digest (peer, local and `SO_ORIGINAL_DST` addresses, read lazily)
//!   computed once per connection, not per request.
//!
//! Also here: [`connect`] (a marked, timed, `TCP_NODELAY` upstream connection) and
//! [`idle_alive`] (the lazy liveness check of a pooled connection, no syscall when
//! nothing arrived).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes are gathered until the next flush while they fit in this (a response
/// header with a small body leaves in one `sendto`); a larger one is sent at once.
/// The size of Pingora's own L4 write buffer, so a body that is streamed without
/// flushes is held no longer than Pingora would hold it.
const WRITE_BUFFER: usize = 1460;

/// Writes gathered until the next flush while they fit in [`WRITE_BUFFER`]; the
/// buffer is freed once sent, so an idle stream holds none. Shared by [`TcpConn`]
/// (under the HTTP codecs) and [`Gathered`] (above TLS).
#[derive(Debug, Default)]
struct WriteGather {
    pending: Vec<u8>,
    /// How much of `pending` has been sent.
    sent: usize,
}

impl WriteGather {
    /// Send what is pending to `w`.
    fn poll_send<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n =
                std::task::ready!(Pin::new(&mut *w).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() <= WRITE_BUFFER {
            self.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Too big to gather: what is pending goes first, then this one directly.
        std::task::ready!(self.poll_send(w, cx))?;
        if buf.len() < WRITE_BUFFER {
            self.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut *w).poll_write(cx, buf)
    }

    fn poll_flush<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(w, cx))?;
        Pin::new(&mut *w).poll_flush(cx)
    }

    fn poll_shutdown<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(w, cx))?;
        Pin::new(&mut *w).poll_shutdown(cx)
    }
}

/// A TCP connection as a Pingora stream: see the module header.
pub struct TcpConn {
    tcp: TcpStream,
    digest: Arc<SocketDigest>,
    /// Bytes written but not yet sent; empty (no allocation) between messages.
    gather: WriteGather,
}

impl fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConn")
            .field("fd", &self.tcp.as_raw_fd())
            .field("pending", &(self.gather.pending.len() - self.gather.sent))
            .finish()
    }
}

impl TcpConn {
    /// Wrap an accepted or connected socket (sets `TCP_NODELAY`: the proxy writes
    /// whole messages, Nagle would only delay them).
    pub fn new(tcp: TcpStream) -> TcpConn {
        let _ = tcp.set_nodelay(true);
        let digest = Arc::new(SocketDigest::from_raw_fd(tcp.as_raw_fd()));
        TcpConn {
            tcp,
            digest,
            gather: WriteGather::default(),
        }
    }

    /// Wait until the peer sent something (or closed): the next request can be read
    /// without waiting, so a session and its buffers are built only then.
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp.readable().await
    }

    /// The first bytes waiting on the socket, not consumed (`MSG_PEEK`).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.peek(buf).await
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, for code that wants it back (a byte copy, TLS, HTTP/2). Only
    /// before anything was written: nothing may be pending.
    pub fn into_tcp(self) -> TcpStream {
        debug_assert!(self.gather.pending.is_empty());
        self.tcp
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.gather.poll_write(&mut this.tcp, cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.gather.poll_flush(&mut this.tcp, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.gather.poll_shutdown(&mut this.tcp, cx)
    }
}

#[async_trait]
impl Shutdown for TcpConn {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for TcpConn {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for TcpConn {}

impl GetTimingDigest for TcpConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        // Not recorded: an empty Vec does not allocate, and sessions are built per
        // request.
        Vec::new()
    }
}

impl GetProxyDigest for TcpConn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TcpConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

impl Peek for TcpConn {}

/// A stream whose small writes are gathered until the next flush, as [`TcpConn`]
/// does for TCP: over TLS, a response header and a small body become one record
/// and one `sendto` instead of two of each. Everything else is the inner stream's.
#[derive(Debug)]
pub struct Gathered {
    inner: Stream,
    gather: WriteGather,
}

impl Gathered {
    pub fn new(inner: Stream) -> Gathered {
        Gathered {
            inner,
            gather: WriteGather::default(),
        }
    }
}

impl AsyncRead for Gathered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.gather.poll_write(&mut *this.inner, cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.gather.poll_flush(&mut *this.inner, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.gather.poll_shutdown(&mut *this.inner, cx)
    }
}

#[async_trait]
impl Shutdown for Gathered {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for Gathered {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Gathered {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Gathered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Gathered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Gathered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Gathered {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Upstream mesh mTLS over a [`TcpConn`], as a Pingora stream.
#[derive(Debug)]
pub struct MeshTls(tokio_rustls::client::TlsStream<TcpConn>);

impl MeshTls {
    /// The TLS handshake with `config` on `tcp`, the peer verified as `server_name`
    /// (also sent as SNI; never empty).
    pub async fn connect(
        tcp: TcpConn,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<MeshTls> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(MeshTls(tls))
    }
}

impl AsyncRead for MeshTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for MeshTls {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for MeshTls {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().0.id()
    }
}

impl Ssl for MeshTls {}

impl GetTimingDigest for MeshTls {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for MeshTls {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for MeshTls {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().0.get_socket_digest()
    }
}

impl Peek for MeshTls {}

/// A TCP connection to `dst` with `SO_MARK` `mark` (never redirected by the
/// interception rules), within `timeout`.
pub async fn connect(
    dst: SocketAddr,
    mark: Option<u32>,
    timeout: std::time::Duration,
) -> io::Result<TcpStream> {
    let socket = if dst.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(m) = mark {
        socket2::SockRef::from(&socket).set_mark(m)?;
    }
    tokio::time::timeout(timeout, socket.connect(dst))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Whether an idle pooled connection can carry a request: nothing arrived on it
/// (no close, no stray bytes). A read is polled once with a no-op waker: a socket
/// with no readiness answers `Pending` without a syscall; for TLS, records such as
/// session tickets are consumed by the TLS layer and still leave it `Pending`.
pub fn idle_alive(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(&mut **stream).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpConn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(
            connect(addr, None, crate::proxy::CONNECT_TIMEOUT),
            listener.accept()
        );
        (TcpConn::new(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn small_writes_are_gathered_until_flush_and_the_buffer_is_freed() {
        let (mut conn, mut peer) = pair().await;
        conn.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        conn.write_all(b"content-length: 2\r\n\r\nok")
            .await
            .unwrap();
        assert!(conn.gather.pending.capacity() > 0);
        conn.flush().await.unwrap();
        assert_eq!(
            conn.gather.pending.capacity(),
            0,
            "an idle connection holds no buffer"
        );
        let mut got = vec![0u8; 40];
        let n = peer.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        // A large write goes through in order after what was pending.
        let big = vec![b'x'; 3 * WRITE_BUFFER];
        conn.write_all(b"head").await.unwrap();
        conn.write_all(&big).await.unwrap();
        conn.flush().await.unwrap();
        let mut all = vec![0u8; 4 + big.len()];
        peer.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..4], b"head");
        assert!(all[4..].iter().all(|b| *b == b'x'));
    }

    #[tokio::test]
    async fn idle_check_sees_a_close_and_stray_bytes() {
        let (conn, peer) = pair().await;
        let mut stream: Stream = Box::new(conn);
        assert!(idle_alive(&mut stream), "a quiet connection is alive");
        drop(peer);
        // The close reaches the reactor asynchronously: poll until it is seen.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while idle_alive(&mut stream) {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }

        let (conn, mut peer) = pair().await;
        let mut stream: Stream = Box::new(conn);
        peer.write_all(b"x").await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while idle_alive(&mut stream) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stray byte never seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}
