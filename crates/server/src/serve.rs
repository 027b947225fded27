//! Building the app from flags, binding, and the drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tm_control::accounts::{Bootstrap, Bootstrapped};
use tm_control::clock::Clock;
use tm_control::{Control, Settings};
use tm_llama::{EmbeddedBackend, ModelConfig};
use tm_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AdminArgs, ServeArgs};
use crate::control::{self, ControlState};
use crate::inference::{self, AppState, RouterConfig};
use crate::models;

/// Opens (creating and migrating) the database `args` name.
pub async fn open_control(args: &ServeArgs, clock: Arc<dyn Clock>) -> Result<Control> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let url = args.database.url(&args.data_dir);
    let store = Store::open(&url).await.with_context(|| format!("cannot open the database {}", redact(&url)))?;
    let settings = Settings { access_token_ttl: Duration::from_secs(args.access_token_ttl), ..Settings::default() };
    Ok(Control::new(store, clock, settings))
}

/// On an empty database, creates the first admin from `TENSORMESH_ADMIN_*` (generating
/// what is missing).
pub async fn bootstrap(control: &Control, admin: &AdminArgs) -> Result<Option<Bootstrapped>> {
    let b = Bootstrap {
        email: Some(admin.admin_email.clone()),
        password: admin.admin_password.clone(),
        api_key: admin.admin_api_key.clone(),
    };
    control.bootstrap(b).await.context("cannot create the first admin")
}

/// The Control Plane router.
pub fn build_control(args: &ServeArgs, control: Control, listen: std::net::SocketAddr) -> Router {
    control::router(ControlState {
        control,
        public_url: args.public_control_url.clone(),
        listen_host: listen.to_string(),
    })
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The inference router for `args`, with its models loaded; API keys are `control`'s.
pub async fn build_inference(args: &ServeArgs, control: Control) -> Result<Router> {
    let configs = model_configs(args)?;
    let backend = tokio::task::spawn_blocking(move || EmbeddedBackend::load(&configs, true))
        .await
        .context("model loading panicked")?
        .map_err(anyhow::Error::msg)?;
    let state = AppState { backend: Arc::new(backend), started: inference::unix_now() };
    Ok(inference::router(state, RouterConfig { control, body_limit: args.max_body_bytes }))
}

/// The models `args` name, each found on disk (else an error naming the pull command).
pub fn model_configs(args: &ServeArgs) -> Result<Vec<ModelConfig>> {
    let dir = args.models_dir.resolve();
    let specs = if args.models.is_empty() { vec![models::DEFAULT_MODEL.to_owned()] } else { args.models.clone() };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    specs
        .iter()
        .map(|spec| {
            let (name, path) = models::resolve(&dir, spec)?;
            Ok(ModelConfig { name, path, slots: args.parallel, queue: args.queue, ctx_size: args.ctx_size, threads })
        })
        .collect()
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
