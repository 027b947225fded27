//! Building the app from flags, binding, and the drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tm_llama::{EmbeddedBackend, ModelConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ServeArgs;
use crate::inference::{self, ApiKeys, AppState, RouterConfig};
use crate::models;

/// The inference router for `args`, with its models loaded.
pub async fn build_inference(args: &ServeArgs, api_keys: &[String]) -> Result<Router> {
    let dir = args.models_dir.resolve();
    let specs = if args.models.is_empty() { vec![models::DEFAULT_MODEL.to_owned()] } else { args.models.clone() };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    let mut configs = Vec::new();
    for spec in &specs {
        let (name, path) = models::resolve(&dir, spec)?;
        configs.push(ModelConfig { name, path, slots: args.parallel, queue: args.queue, ctx_size: args.ctx_size, threads });
    }
    let backend = tokio::task::spawn_blocking(move || EmbeddedBackend::load(&configs, true))
        .await
        .context("model loading panicked")?
        .map_err(anyhow::Error::msg)?;
    let state = AppState { backend: Arc::new(backend), started: inference::unix_now() };
    Ok(inference::router(state, RouterConfig { keys: ApiKeys::new(api_keys), body_limit: args.max_body_bytes }))
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and gives
/// in-flight requests (streams included) up to `drain` to finish.
pub async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<()> {
    let stop = CancellationToken::new();
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        result = &mut server => return result.context("server failed"),
        () = shutdown => {}
    }
    info!(drain_secs = drain.as_secs(), "shutting down: no new connections, draining in-flight requests");
    stop.cancel();
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result.context("server failed"),
        Err(_) => {
            warn!("drain deadline reached; closing remaining connections");
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// A fresh API key for servers started without one.
pub fn generate_api_key() -> String {
    format!("tm-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}
