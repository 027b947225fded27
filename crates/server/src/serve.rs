//! The parts an `App` (app.rs) is built from (the database, the first admin,
//! billing, the models and both routers) and the drain of one listener on shutdown.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use prometheus_client::registry::Registry;
use tm_backend::{Backend, ByModel};
use tm_control::accounts::{Bootstrap, Bootstrapped};
use tm_control::clock::Clock;
use tm_control::{Control, Settings};
use tm_gateway::{Gateway, Replica, Settler, SharedLimits};
use tm_llama::{EmbeddedBackend, ModelConfig};
use tm_money::{Nanos, Price};
use tm_store::Store;
use tm_upstream::{FleetConfig, UpstreamBackend};
use tracing::info;

use crate::config::{Config, FirstAdmin, Serving};
use crate::control::{self, ControlState};
use crate::downloads;
use crate::inference::{self, AppState, RouterConfig};

/// Opens (creating and migrating) the database `args` name.
pub(crate) async fn open_control(config: &Config, clock: Arc<dyn Clock>) -> Result<Control> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let url = &config.database_url;
    let store = Store::open(url).await.with_context(|| format!("cannot open the database {}", redact(url)))?;
    let settings = Settings {
        access_token_ttl: config.access_token_ttl,
        requests_per_minute: config.control_requests_per_minute,
        ..Settings::default()
    };
    Ok(Control::new(store, clock, settings))
}

/// On an empty database, creates the first admin (generating what is not configured)
/// and credits it.
pub(crate) async fn bootstrap(control: &Control, admin: &FirstAdmin) -> Result<Option<Bootstrapped>> {
    let b = Bootstrap {
        email: Some(admin.email.clone()),
        password: admin.password.clone(),
        api_key: admin.api_key.clone(),
    };
    let created = control.accounts().bootstrap(b).await.context("cannot create the first admin")?;
    if let Some(made) = &created {
        if admin.credit > Nanos::ZERO {
            control.billing().grant(&made.user.id, admin.credit.get(), "Starting credit of the first admin").await?;
        }
    }
    Ok(created)
}

/// The file, in the data dir, that receives the first admin's generated secrets.
pub const SECRETS_FILE: &str = "first-admin-secrets.txt";

/// Writes what was generated for the first admin (password, API key) to [`SECRETS_FILE`],
/// readable by the server's user only, so that they never need to go to stdout, which is
/// often a log collector. None when nothing was generated.
pub(crate) fn save_generated_secrets(data_dir: &Path, made: &Bootstrapped) -> Result<Option<PathBuf>> {
    if made.generated_password.is_none() && made.generated_api_key.is_none() {
        return Ok(None);
    }
    let path = data_dir.join(SECRETS_FILE);
    // One left by an earlier database, with whatever mode it had, is replaced.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()))
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut text = format!(
        "# The first admin of this Tensormesh server, generated on its first start.\n\
         # Store these somewhere safe, then delete this file.\nemail: {}\n",
        made.user.email
    );
    if let Some(password) = &made.generated_password {
        text.push_str(&format!("password: {password}\n"));
    }
    if let Some(key) = &made.generated_api_key {
        text.push_str(&format!("api_key: {key}\n"));
    }
    options
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}

/// Where a replica keeps the id it registered under, so that the next process on the same
/// data dir voids what the previous one held at once (it is dead: this one runs there now)
/// instead of after the heartbeat timeout.
const REPLICA_ID_FILE: &str = "replica-id";

/// Joins the replicas on the database: settles what the previous process on this data dir
/// left in its settlement journal, voids what it still held (those requests died with it,
/// unbilled), and registers this one.
pub(crate) async fn join_replicas(config: &Config, control: &Control) -> Result<Replica> {
    let replayed = tm_gateway::journal::replay(control.store(), &config.data_dir).await?;
    if replayed > 0 {
        info!(requests = replayed, "settled what the previous process left in its settlement journal");
    }
    let file = config.data_dir.join(REPLICA_ID_FILE);
    let previous = std::fs::read_to_string(&file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let replica = Replica::join(control.store(), previous.as_deref(), config.heartbeat_timeout)
        .await
        .context("cannot register this replica in the database")?;
    std::fs::create_dir_all(&config.data_dir)
        .and_then(|()| std::fs::write(&file, replica.id().as_bytes()))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(replica)
}

/// Prices the models about to be served that have no price yet.
pub(crate) async fn prepare_billing(control: &Control, price: Price, models: &[String]) -> Result<()> {
    for model in control.pricing().seed(models, price).await? {
        info!(%model, input = %price.input, output = %price.output, cached = %price.cached,
              "priced (USD per 1M tokens)");
    }
    Ok(())
}

/// The Control Plane router; `serving` (the inference side, when this process runs one)
/// answers for deployments: which models are up, one-shot chats.
pub(crate) fn build_control(
    config: &Config,
    control: Control,
    listen: std::net::SocketAddr,
    serving: Option<AppState>,
) -> Router {
    control::router(ControlState {
        control,
        public_url: config.public_control_url.clone(),
        listen_host: listen.to_string(),
        serving,
    })
}

/// The inference listener's router, its settler (run it until shutdown), and its state,
/// which the Control Plane shares.
pub(crate) struct Inference {
    pub router: Router,
    pub settler: Settler,
    pub state: AppState,
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The inference router for `config` with its models loaded (embedded, and the fleets of
/// its fleet file), and its settler (to run beside it); API keys, prices and balances are
/// `control`'s.
pub(crate) async fn build_inference(config: &Config, control: Control) -> Result<Inference> {
    let (configs, fleet) = served_models(&config.serving)?;
    let (embedded, mut metrics) = tokio::task::spawn_blocking(move || {
        let mut metrics = Registry::with_prefix("tensormesh");
        EmbeddedBackend::load(&configs, true, &mut metrics).map(|b| (b, metrics))
    })
    .await
    .context("model loading panicked")?
    .map_err(anyhow::Error::msg)?;
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    if !embedded.models().is_empty() {
        backends.push(Arc::new(embedded));
    }
    if !fleet.models.is_empty() {
        let upstream = UpstreamBackend::connect(fleet, &mut metrics).await.map_err(anyhow::Error::msg)?;
        for m in upstream.models() {
            info!(model = %m.id, endpoints = m.endpoints.len(), max_context = m.max_context, "serving from upstream engines");
        }
        backends.push(Arc::new(upstream));
    }
    let backend: Arc<dyn Backend> = match backends.len() {
        1 => backends.remove(0),
        _ => Arc::new(ByModel::new(backends).map_err(anyhow::Error::msg)?),
    };
    inference_app_with_metrics(config, control, backend, metrics).await
}

/// The inference router over any backend (tests and benchmarks bring their own).
pub(crate) async fn inference_app(config: &Config, control: Control, backend: Arc<dyn Backend>) -> Result<Inference> {
    inference_app_with_metrics(config, control, backend, Registry::with_prefix("tensormesh")).await
}

/// The inference router, exposing `metrics` on `GET /metrics`.
pub(crate) async fn inference_app_with_metrics(
    config: &Config,
    control: Control,
    backend: Arc<dyn Backend>,
    metrics: Registry,
) -> Result<Inference> {
    let models: Vec<String> = backend.models().into_iter().map(|m| m.id).collect();
    prepare_billing(&control, config.billing.default_price, &models).await?;
    let replica = join_replicas(config, &control).await?;
    let shared = match &config.redis_limits {
        Some(r) => Some(SharedLimits::connect(&r.url, r.timeout, r.outage).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let limits = config.billing.limits;
    let (gateway, settler) = Gateway::new(
        control.clone(),
        control.store().clone(),
        backend.clone(),
        limits,
        replica,
        shared,
        &config.data_dir,
    );
    let state = AppState {
        backend,
        gateway,
        control,
        started: inference::unix_now(),
        metrics: Arc::new(metrics),
        metrics_token: config.metrics_token.as_deref().map(Arc::from),
        draining: Arc::default(),
    };
    let router_config = RouterConfig { body_limit: config.max_body_bytes, with_metrics: config.metrics_addr.is_none() };
    let router = inference::router(state.clone(), router_config);
    Ok(Inference { router, settler, state })
}

/// What `serving` serves: the embedded models (found on disk, else an error naming the
/// pull command) and the upstream fleets. Without models named, a fleet file that declares
/// models replaces the default embedded model instead of adding to it.
pub(crate) fn served_models(serving: &Serving) -> Result<(Vec<ModelConfig>, FleetConfig)> {
    let fleet = match &serving.upstreams {
        Some(path) => FleetConfig::load(path)?,
        None => FleetConfig::default(),
    };
    let named = !serving.models.is_empty();
    let embedded = if fleet.models.is_empty() || named { model_configs(serving)? } else { Vec::new() };
    Ok((embedded, fleet))
}

/// The models `serving` names, each found on disk (else an error naming the pull command).
fn model_configs(serving: &Serving) -> Result<Vec<ModelConfig>> {
    let default = [downloads::DEFAULT_MODEL.to_owned()];
    let specs = if serving.models.is_empty() { &default[..] } else { &serving.models[..] };
    let cache = &serving.cache;
    specs
        .iter()
        .map(|spec| {
            let (name, path) = downloads::resolve(&serving.models_dir, spec)?;
            Ok(ModelConfig {
                name,
                path,
                slots: serving.parallel,
                queue: serving.queue,
                ctx_size: serving.ctx_size,
                threads: serving.threads,
                kv_cells: cache.kv_cache_tokens,
                cache_sequences: cache.cache_sequences,
                step_tokens: cache.step_tokens,
                prefix_cache: cache.prefix_cache,
                spill: cache.spill.clone(),
                idle_tokens: cache.kv_idle_tokens,
                grammar_engine: serving.grammar_engine,
                speculative: serving.speculative,
            })
        })
        .collect()
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
