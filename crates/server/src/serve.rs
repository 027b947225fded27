//! The parts an `App` (app.rs) is built from (the database, the first admin,
//! billing, the models and both routers) and the drain of one listener on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use prometheus_client::registry::Registry;
use tm_backend::{Backend, ByModel};
use tm_control::accounts::{Bootstrap, Bootstrapped};
use tm_control::clock::Clock;
use tm_control::{Control, Settings};
use tm_gateway::{Gateway, LimitSettings, Limits, Settler};
use tm_llama::{EmbeddedBackend, ModelConfig, SpillConfig};
use tm_money::{Nanos, Price};
use tm_store::Store;
use tm_upstream::{FleetConfig, UpstreamBackend};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AdminArgs, BillingArgs, ServeArgs};
use crate::control::{self, ControlState};
use crate::inference::{self, AppState, RouterConfig};
use crate::models;

/// Opens (creating and migrating) the database `args` name.
pub(crate) async fn open_control(args: &ServeArgs, clock: Arc<dyn Clock>) -> Result<Control> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let url = args.database.url(&args.data_dir);
    let store = Store::open(&url).await.with_context(|| format!("cannot open the database {}", redact(&url)))?;
    let settings = Settings { access_token_ttl: Duration::from_secs(args.access_token_ttl), ..Settings::default() };
    Ok(Control::new(store, clock, settings))
}

/// On an empty database, creates the first admin from `TENSORMESH_ADMIN_*` (generating
/// what is missing) and credits it `billing.admin_credit`.
pub(crate) async fn bootstrap(
    control: &Control,
    admin: &AdminArgs,
    billing: &BillingArgs,
) -> Result<Option<Bootstrapped>> {
    let b = Bootstrap {
        email: Some(admin.admin_email.clone()),
        password: admin.admin_password.clone(),
        api_key: admin.admin_api_key.clone(),
    };
    let created = control.bootstrap(b).await.context("cannot create the first admin")?;
    if let Some(admin) = &created {
        let credit = usd_arg("--admin-credit", billing.admin_credit)?;
        if credit > Nanos::ZERO {
            control.grant(&admin.user.id, credit.get(), "Starting credit of the first admin").await?;
        }
    }
    Ok(created)
}

/// Readies billing for the models about to be served: voids the holds a previous process
/// left (their requests died with it, unbilled) and prices models that have no price.
pub(crate) async fn prepare_billing(control: &Control, billing: &BillingArgs, models: &[String]) -> Result<()> {
    let voided = control.store().ledger().void_all_holds().await.context("cannot void stale holds")?;
    if voided > 0 {
        warn!(holds_voided_on_recovery = voided, "voided holds of requests the previous process left unsettled");
    }
    let price = Price {
        input: usd_arg("--default-input-price", billing.default_input_price)?,
        output: usd_arg("--default-output-price", billing.default_output_price)?,
        cached: usd_arg("--default-cached-price", billing.default_cached_price)?,
    };
    for model in control.seed_prices(models, price).await? {
        info!(%model, input = billing.default_input_price, output = billing.default_output_price,
              cached = billing.default_cached_price, "priced (USD per 1M tokens)");
    }
    Ok(())
}

fn usd_arg(flag: &str, usd: f64) -> Result<Nanos> {
    match Nanos::from_usd(usd) {
        Some(n) if n >= Nanos::ZERO => Ok(n),
        _ => anyhow::bail!("{flag} must be a non-negative amount of USD, got {usd}"),
    }
}

/// The Control Plane router; `serving` (the inference side, when this process runs one)
/// answers for deployments: which models are up, one-shot chats.
pub(crate) fn build_control(
    args: &ServeArgs,
    control: Control,
    listen: std::net::SocketAddr,
    serving: Option<AppState>,
) -> Router {
    control::router(ControlState {
        control,
        public_url: args.public_control_url.clone(),
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

/// The inference router for `args` with its models loaded (embedded, and the fleets of
/// `--upstreams`), and its settler (to run beside it); API keys, prices and balances are
/// `control`'s.
pub(crate) async fn build_inference(args: &ServeArgs, control: Control) -> Result<Inference> {
    let (configs, fleet) = served_models(args)?;
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
    inference_app_with_metrics(args, control, backend, metrics).await
}

/// The inference router over any backend (tests and benchmarks bring their own).
pub(crate) async fn inference_app(args: &ServeArgs, control: Control, backend: Arc<dyn Backend>) -> Result<Inference> {
    inference_app_with_metrics(args, control, backend, Registry::with_prefix("tensormesh")).await
}

/// The inference router, exposing `metrics` on `GET /metrics`.
pub(crate) async fn inference_app_with_metrics(
    args: &ServeArgs,
    control: Control,
    backend: Arc<dyn Backend>,
    metrics: Registry,
) -> Result<Inference> {
    let models: Vec<String> = backend.models().into_iter().map(|m| m.id).collect();
    prepare_billing(&control, &args.billing, &models).await?;
    let b = &args.billing;
    let limits = LimitSettings {
        per_key: Limits { requests_per_minute: b.key_rpm, tokens_per_minute: b.key_tpm },
        per_user: Limits { requests_per_minute: b.user_rpm, tokens_per_minute: b.user_tpm },
    };
    let (gateway, settler) = Gateway::new(control.clone(), control.store().clone(), backend.clone(), limits);
    let state = AppState { backend, gateway, control, started: inference::unix_now(), metrics: Arc::new(metrics) };
    let router = inference::router(state.clone(), RouterConfig { body_limit: args.max_body_bytes });
    Ok(Inference { router, settler, state })
}

/// What `args` serve: the embedded models (found on disk, else an error naming the pull
/// command) and the upstream fleets. Without `--model`, a fleet file that declares models
/// replaces the default embedded model instead of adding to it.
pub(crate) fn served_models(args: &ServeArgs) -> Result<(Vec<ModelConfig>, FleetConfig)> {
    let fleet = match &args.upstreams {
        Some(path) => FleetConfig::load(path)?,
        None => FleetConfig::default(),
    };
    let embedded = if fleet.models.is_empty() || !args.models.is_empty() { model_configs(args)? } else { Vec::new() };
    Ok((embedded, fleet))
}

/// The models `args` name, each found on disk (else an error naming the pull command).
pub(crate) fn model_configs(args: &ServeArgs) -> Result<Vec<ModelConfig>> {
    let dir = args.models_dir.resolve();
    let specs = if args.models.is_empty() { vec![models::DEFAULT_MODEL.to_owned()] } else { args.models.clone() };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    specs
        .iter()
        .map(|spec| {
            let (name, path) = models::resolve(&dir, spec)?;
            let cache = &args.cache;
            Ok(ModelConfig {
                name,
                path,
                slots: args.parallel,
                queue: args.queue,
                ctx_size: args.ctx_size,
                threads,
                kv_cells: cache.kv_cache_tokens,
                cache_sequences: cache.cache_sequences,
                step_tokens: cache.step_tokens,
                prefix_cache: cache.prefix_cache,
                spill: SpillConfig {
                    ram_bytes: cache.kv_spill_ram_mb << 20,
                    dir: Some(cache.kv_spill_dir.clone().unwrap_or_else(|| args.data_dir.join("kv-cache"))),
                    disk_bytes: cache.kv_spill_disk_mb << 20,
                },
                idle_tokens: cache.kv_idle_tokens,
                grammar_engine: args.grammar_engine.into(),
                speculative: args.speculative == crate::config::SpeculativeArg::Ngram,
            })
        })
        .collect()
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and gives
/// in-flight requests (streams included) up to `drain` to finish.
pub(crate) async fn run(
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
