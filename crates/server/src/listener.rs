//! One listener's accept loop: HTTP/1 and HTTP/2 on hyper with a timer, so that a client
//! that sends its headers a byte at a time, or keeps a connection open doing nothing, is
//! cut off (`axum::serve` runs hyper without a timer: no timeout at all); a bounded number
//! of connections; request bodies that must arrive in time; and the drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{debug, info, warn};

use crate::config::Connections;
use tm_control::throttle::ClientAddr;

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and gives
/// in-flight requests (streams included) up to `drain` to finish.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    limits: Connections,
) -> Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let open = Arc::new(Semaphore::new(limits.max_open));
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, wait for a connection to close before accepting another.
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        connections.spawn(async move {
            let _permit = permit;
            if !protocol_known(&stream, limits.header_timeout).await {
                return;
            }
            let service = TowerToHyperService::new(app.map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ClientAddr(peer.ip()));
                req
            }));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    info!(drain_secs = drain.as_secs(), "shutting down: no new connections, draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!("drain deadline reached; closing remaining connections");
    }
    Ok(())
}

/// Waits, at most `wait`, until the client has sent enough to tell HTTP/1 from HTTP/2
/// (hyper's own check reads with no timer, so a connection that sends nothing would stay
/// open for good): false when it sent nothing in time, or hung up.
async fn protocol_known(stream: &TcpStream, wait: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = Instant::now() + wait;
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n == PREFACE.len() || seen[..n] != PREFACE[..n] {
            return true;
        }
        // The start of the HTTP/2 preface: the rest is on its way.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10))).await.is_err() {
            return false;
        }
    }
}
