//! `tm`: the Tensormesh CLI, a drop-in for the official `tm` 0.2.1 (contract: docs/cli.md,
//! docs/contracts.md "The CLI"). Same command tree, flags, files, outputs and exit codes.
//!
//! Layout: [`settings`] (flags > env > config.toml > defaults, with sources), [`files`]
//! (`auth.json`, atomic 0600 writes), [`http`] (timeouts, retries, error shapes),
//! [`output`] (the five formats), [`progress`] (the waiting spinner), `commands/*` (one
//! module per command group).

mod commands;
mod completion;
mod decimal;
mod error;
mod files;
mod http;
mod output;
mod progress;
mod pyyaml;
mod settings;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use commands::{activities, admin, auth, billing, cost, infer, local, products, setup, support, users};
use error::CliError;
use output::Format;
use settings::{Flags, Settings};

pub const VERSION: &str = "0.2.1";

#[derive(Parser, Debug)]
#[command(
    name = "tm",
    about = "Tensormesh CLI.",
    disable_version_flag = true,
    subcommand_required = false,
    after_help = "Precedence: flags > env > config.toml ([overrides] before [managed]) > defaults.\n\
                  Global options such as --output must come before the subcommand.\n\n\
                  Environment: TENSORMESH_CONTROL_PLANE_BASE_URL, TENSORMESH_TIMEOUT_SECONDS,\n\
                  TENSORMESH_MAX_RETRIES, TENSORMESH_CA_BUNDLE, TM_CONFIG_HOME."
)]
struct Cli {
    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Config TOML to read (default: <home>/config.toml).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    config: Option<String>,
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value = "text")]
    output: Format,
    /// Suppress non-essential messages.
    #[arg(long)]
    quiet: bool,
    /// Log each HTTP attempt on stderr (secrets redacted).
    #[arg(long)]
    debug: bool,
    /// PEM bundle for TLS verification.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    ca_bundle: Option<String>,
    /// Default HTTP timeout in seconds.
    #[arg(long, value_name = "FLOAT")]
    timeout: Option<f64>,
    /// Retries for idempotent requests.
    #[arg(long, value_name = "INTEGER")]
    max_retries: Option<i64>,
    /// Control Plane base URL.
    #[arg(long, value_name = "TEXT")]
    controlplane_base: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show CLI and runtime details.
    Version,
    /// Print the shell completion hook.
    Completion(local::CompletionArgs),
    /// Local configuration.
    #[command(subcommand)]
    Config(local::ConfigCommand),
    /// Guide first-time CLI setup for Control Plane and serverless workflows.
    Init,
    /// Diagnose configuration and credentials.
    Doctor(setup::DoctorArgs),
    /// Control Plane authentication.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Billing: balance, transactions, spending, pricing.
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// Serverless inference (OpenAI-compatible).
    #[command(subcommand)]
    Infer(infer::InferCommand),
    /// Per-model serverless spend and KV-cache savings.
    Cost(cost::CostArgs),
    /// Your profile and API keys.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Support tickets (Control Plane).
    #[command(subcommand)]
    Tickets(support::TicketsCommand),
    /// Reserved deployments (Support; Control Plane).
    #[command(subcommand)]
    ReservedDeployments(support::ReservedDeploymentsCommand),
    /// Activities (Control Plane).
    #[command(subcommand)]
    Activities(activities::ActivitiesCommand),
    /// Observability metrics (Control Plane).
    #[command(subcommand)]
    Metrics(activities::MetricsCommand),
    /// Products (Control Plane).
    #[command(subcommand)]
    Products(products::ProductsCommand),
    /// Administration (admin roles only).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// What every command gets: the global flags and the resolved settings (on demand, so
/// that `version` and `completion` work with a broken config file).
pub struct Ctx {
    pub format: Format,
    pub quiet: bool,
    pub debug: bool,
    flags: Flags,
}

impl Ctx {
    pub fn settings(&self) -> error::Result<Settings> {
        Settings::resolve(&self.flags)
    }

    pub fn http(&self, settings: &Settings) -> error::Result<http::Http> {
        http::Http::new(
            settings.timeout(),
            settings.max_retries.value.unwrap_or(0),
            settings.ca_bundle.value.as_deref(),
            self.debug && !self.quiet,
        )
    }

    /// Writes a command's result to stdout.
    pub fn print(&self, text: &str) {
        output::write_stdout(text);
    }
}

fn main() -> ExitCode {
    // The hook `tm completion SHELL` prints runs `_TM_COMPLETE=<shell>_source tm`, and the
    // script it loads asks `_TM_COMPLETE=<shell>_complete tm` at each <TAB>.
    let prog = std::env::args_os()
        .next()
        .and_then(|p| std::path::Path::new(&p).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tm".into());
    if let Some(request) = std::env::var(completion::complete_var(&prog)).ok().filter(|v| !v.is_empty()) {
        let (text, status) = completion::answer(&request, &Cli::command(), &prog);
        output::write_stdout(&text);
        return ExitCode::from(status);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let usage = usage_line(&matches);
    if cli.version {
        output::write_stdout(&format!("tm, version {VERSION}\n"));
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        // Like a group without a subcommand: help on stderr, exit 2.
        eprint!("{}", Cli::command().render_help());
        return ExitCode::from(2);
    };
    let ctx = Ctx {
        format: cli.output,
        quiet: cli.quiet,
        debug: cli.debug,
        flags: Flags {
            config: cli.config,
            controlplane_base: cli.controlplane_base,
            timeout: cli.timeout,
            max_retries: cli.max_retries,
            ca_bundle: cli.ca_bundle,
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Version => local::version(&ctx),
            Command::Completion(args) => local::completion(&args),
            Command::Config(c) => local::config(&ctx, c),
            Command::Init => setup::init(&ctx),
            Command::Doctor(args) => setup::doctor(&ctx, args),
            Command::Auth(c) => auth::run(&ctx, c).await,
            Command::Billing(c) => billing::run(&ctx, c).await,
            Command::Infer(c) => infer::run(&ctx, c).await,
            Command::Cost(args) => cost::run(&ctx, args).await,
            Command::Users(c) => users::run(&ctx, c).await,
            Command::Tickets(c) => support::tickets(&ctx, c).await,
            Command::ReservedDeployments(c) => support::reserved_deployments(&ctx, c).await,
            Command::Activities(c) => activities::activities(&ctx, c).await,
            Command::Metrics(c) => activities::metrics(&ctx, c).await,
            Command::Products(c) => products::products(&ctx, c).await,
            Command::Admin(c) => admin::run(&ctx, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let CliError::Usage(_) = e {
                eprintln!("{usage}");
            }
            if !matches!(e, CliError::Exit(_)) {
                eprintln!("Error: {}", e.message());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The usage lines a usage error starts with, for the command that ran, as Click prints
/// them: `Usage: tm tickets message [OPTIONS] TICKET_ID` and where to get help.
fn usage_line(matches: &ArgMatches) -> String {
    let mut command = Cli::command();
    let mut path = vec!["tm".to_owned()];
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        let Some(next) = command.find_subcommand(name).cloned() else { break };
        command = next;
        path.push(name.to_owned());
        m = sub;
    }
    let path = path.join(" ");
    let positionals: String =
        command.get_positionals().map(|a| format!(" {}", a.get_id().as_str().to_ascii_uppercase())).collect();
    format!("Usage: {path} [OPTIONS]{positionals}\nTry '{path} --help' for help.\n")
}
