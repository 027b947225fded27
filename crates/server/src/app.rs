//! The process, assembled in one place: `tensormesh serve`, the HTTP tests and the gateway
//! benchmark all start an [`App`], so what the tests exercise is what ships, shutdown order
//! included (the shape of mini-redis's `server::run(listener, shutdown)`, for the whole
//! process).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tm_backend::Backend;
use tm_control::accounts::Bootstrapped;
use tm_control::clock::Clock;
use tm_control::Control;
use tm_gateway::Settler;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Connections};
use crate::inference::{self, AppState};
use crate::serve::{self, Inference};
use crate::{listener, notices};

/// What serves inference in an [`App`].
pub enum Engines {
    /// What the configuration names: its embedded models and upstream fleets.
    Configured,
    /// A backend the caller made (a stand-in engine in tests and benchmarks).
    Given(Arc<dyn Backend>),
    /// None: the Control Plane alone, without the inference listener.
    None,
}

/// The inference side of a running process.
struct Serving {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    settler: Settler,
    state: AppState,
    /// `GET /metrics` on its own address (`--metrics-addr`).
    metrics: Option<(TcpListener, SocketAddr)>,
}

/// A built process: the database open and migrated, the first admin created (on an empty
/// database), models loaded, both listeners bound. [`App::run`] serves it.
pub struct App {
    control: Control,
    first_admin: Option<Bootstrapped>,
    /// Where its generated secrets were written.
    first_admin_secrets: Option<PathBuf>,
    serving: Option<Serving>,
    control_listener: TcpListener,
    control_addr: SocketAddr,
    control_router: Router,
    drain: Duration,
    /// `--drain-delay`: not ready, still serving, before the drain.
    drain_delay: Duration,
    connections: Connections,
}

impl App {
    /// Builds the process `config` describes. A missing model or a bad fleet file is
    /// reported before anything is created on disk; a listener that cannot be bound is an
    /// error naming its address.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>, engines: Engines) -> Result<App> {
        if matches!(engines, Engines::Configured) {
            serve::served_models(&config.serving)?;
        }
        let control = serve::open_control(config, clock).await?;
        let first_admin = serve::bootstrap(&control, &config.first_admin).await?;
        let first_admin_secrets = match &first_admin {
            Some(made) => serve::save_generated_secrets(&config.data_dir, made)?,
            None => None,
        };
        let inference = match engines {
            Engines::Configured => Some(serve::build_inference(config, control.clone()).await?),
            Engines::Given(backend) => Some(serve::inference_app(config, control.clone(), backend).await?),
            Engines::None => None,
        };
        let serving = match inference {
            Some(Inference { router, settler, state }) => {
                let listener = bind(config.inference_addr).await?;
                let addr = listener.local_addr()?;
                let metrics = match config.metrics_addr {
                    Some(at) => {
                        let listener = bind(at).await?;
                        let addr = listener.local_addr()?;
                        Some((listener, addr))
                    }
                    None => None,
                };
                Some(Serving { listener, addr, router, settler, state, metrics })
            }
            None => None,
        };
        let control_listener = bind(config.control_addr).await?;
        let control_addr = control_listener.local_addr()?;
        let control_router =
            serve::build_control(config, control.clone(), control_addr, serving.as_ref().map(|s| s.state.clone()));
        let (drain, connections) = (config.shutdown_timeout, config.connections);
        Ok(App {
            control,
            first_admin,
            first_admin_secrets,
            serving,
            control_listener,
            control_addr,
            control_router,
            drain,
            drain_delay: config.drain_delay,
            connections,
        })
    }

    /// Where the inference API listens (none for a Control Plane alone).
    pub fn inference_addr(&self) -> Option<SocketAddr> {
        self.serving.as_ref().map(|s| s.addr)
    }

    /// Where `GET /metrics` is served on its own (`--metrics-addr`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.serving.as_ref().and_then(|s| s.metrics.as_ref()).map(|(_, addr)| *addr)
    }

    /// Where the Control Plane listens.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The admin created by this start, on an empty database.
    pub fn first_admin(&self) -> Option<&Bootstrapped> {
        self.first_admin.as_ref()
    }

    /// The file the first admin's generated secrets were written to (0600), if any.
    pub fn first_admin_secrets(&self) -> Option<&Path> {
        self.first_admin_secrets.as_deref()
    }

    /// The Control Plane domain the process runs on (benchmarks read usage through it).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Serves until `shutdown` resolves, then shuts down in the one safe order: both
    /// listeners stop accepting and drain for up to `--shutdown-timeout`; generations still
    /// running end (each settles for what it used); every settlement is written; the engines
    /// save their cached prefixes; the database closes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let App { control, serving, control_listener, control_router, drain, drain_delay, connections, .. } = self;
        let stop = CancellationToken::new();
        let gateway = serving.as_ref().map(|s| s.state.gateway.clone());

        let draining = serving.as_ref().map(|s| s.state.draining.clone());
        let signal = {
            let stop = stop.clone();
            async move {
                shutdown.await;
                // Not ready first, still serving: load balancers stop sending, then the drain.
                if let Some(draining) = draining {
                    draining.store(true, std::sync::atomic::Ordering::Relaxed);
                    if !drain_delay.is_zero() {
                        tracing::info!(
                            seconds = drain_delay.as_secs(),
                            "shutting down: /ready says 503, still serving"
                        );
                        tokio::time::sleep(drain_delay).await;
                    }
                }
                stop.cancel();
            }
        };
        let serve = async {
            match serving {
                Some(Serving { listener, router, settler, state, metrics, .. }) => {
                    let servers_done = CancellationToken::new();
                    let metrics_server = async {
                        match metrics {
                            Some((listener, _)) => {
                                let router = inference::metrics_router(state.clone());
                                listener::run(listener, router, stop.clone().cancelled_owned(), drain, connections)
                                    .await
                            }
                            None => Ok(()),
                        }
                    };
                    let servers = async {
                        let result = tokio::try_join!(
                            listener::run(listener, router, signal, drain, connections),
                            listener::run(
                                control_listener,
                                control_router,
                                stop.clone().cancelled_owned(),
                                drain,
                                connections
                            ),
                            metrics_server,
                        );
                        // Streams still open past the drain end now, and settle while the
                        // settler runs.
                        state.gateway.stop_generations(Duration::from_secs(5)).await;
                        servers_done.cancel();
                        result.map(|_| ())
                    };
                    // Requests that ended during the drain are settled before the database
                    // closes.
                    let (result, ()) = tokio::join!(servers, settler.run(servers_done.clone().cancelled_owned()));
                    state.backend.shutdown().await;
                    result
                }
                None => listener::run(control_listener, control_router, signal, drain, connections).await,
            }
        };
        // Beside the listeners, for as long as they run: what the other replicas change (keys
        // deleted, users disabled, prices) leaves this one's caches as it happens, and they
        // get this one's unused leases when they ask.
        let changes_done = CancellationToken::new();
        let serve = async {
            let result = serve.await;
            changes_done.cancel();
            result
        };
        let following = notices::follow(&control, gateway.as_ref(), changes_done.clone().cancelled_owned());
        let (result, ()) = tokio::join!(serve, following);
        control.store().close().await;
        result
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}
