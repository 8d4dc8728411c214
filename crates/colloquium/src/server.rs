//! The node's HTTP/1.1 listener: what `axum::serve` leaves open.
//!
//! - **Connection cap** (`server.max_connections`): past it, new connections wait in the
//!   kernel's backlog instead of exhausting file descriptors.
//! - **Header deadline** (`server.header_read_timeout`): a client that dribbles a request's
//!   headers is disconnected, so it cannot hold a connection slot (or stall shutdown).
//! - **Draining**: on shutdown, stop accepting, close idle keep-alive connections, let
//!   in-flight requests finish, and give up after `server.shutdown_timeout`.
//! - **TLS** (`server.tls`): the handshake runs in the connection's task, bounded by the
//!   header deadline; each handshake takes the certificate current at that moment, so a
//!   reloaded certificate never drops a connection.
//! - **The client's address** goes into each request as `ConnectInfo`, for the audit log and
//!   the per-address failure limit.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connection handling limits (from `server:`).
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Acks are small and latency-bound; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let watcher = graceful.watcher();
        let (http, tls) = (http.clone(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(tls) => {
                    match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let connection = http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open, "draining connections");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(timeout = ?limits.shutdown_timeout, "in-flight requests did not finish in server.shutdown_timeout; closing");
        }
    }
}
