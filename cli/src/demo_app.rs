//! `isthmus demo-app`: the built-in demo workload `up` starts for WorkloadEntries
//! annotated `isthmus.dev/demo-app`. It answers every request with its app name and
//! version (body `todolist v2` plus a JSON line describing the request), over
//! HTTP/1.1 keep-alive and h2c, so a canary split is visible with plain `curl`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// End the process once standard input reaches end of file: the parent holding the
/// pipe's other end has exited, however it died.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match std::io::Read::read(&mut stdin, &mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

pub struct DemoApp {
    pub name: String,
    pub version: String,
}

impl DemoApp {
    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        // The mesh peer's identity as its sidecar passed it on (absent without one).
        let xfcc = req
            .headers()
            .get("x-forwarded-client-cert")
            .and_then(|h| h.to_str().ok());
        let info = serde_json::json!({
            "app": self.name,
            "version": self.version,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
            "host": host,
            "xfcc": xfcc,
        });
        let body = format!("{} {}\n{}\n", self.name, self.version, info);
        Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .header("x-app-version", self.version.as_str())
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    /// Serve on `addr` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("demo-app: cannot listen on {addr}: {e}"))?;
        tracing::info!(
            "demo-app {} {} listening on http://{}",
            self.name,
            self.version,
            listener.local_addr()?
        );
        let app = Arc::new(self);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("demo-app accept: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.respond(&req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}
