//! Commands without HTTP: `version`, `completion`, `config init|show`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::output::{self, Format};
use crate::{files, settings, Ctx, VERSION};

pub fn version(ctx: &Ctx) -> Result<()> {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
    let root =
        std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.display().to_string())).unwrap_or_default();
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    if ctx.format == Format::Raw {
        ctx.print(&format!("{VERSION}\n"));
        return Ok(());
    }
    if ctx.format == Format::Text {
        ctx.print(&format!(
            "tm version\n\nCLI version: {VERSION}\nRuntime: Rust (native binary)\nDistribution: standalone-binary\n\
             Platform: {platform}\nExecutable: {exe}\nPackage root: {root}\n"
        ));
        return Ok(());
    }
    let info = json!({
        "cli_version": VERSION,
        "python_version": null,
        "python_implementation": null,
        "platform": platform,
        "executable": exe,
        "package_root": root,
        "requires_python": null,
        "distribution_model": "standalone-binary",
        "install_guide": "/cli/guides/installation",
    });
    ctx.print(&output::value_in(ctx.format, &info));
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    #[arg(value_enum, ignore_case = true)]
    shell: Shell,
    /// Program name the hook completes.
    #[arg(long, default_value = "tm")]
    prog: String,
}

/// Click's completion hook (one line), as the official CLI prints it; the script behind
/// it comes from [`crate::completion`].
pub fn completion(args: &CompletionArgs) -> Result<()> {
    let var = crate::completion::complete_var(&args.prog);
    let prog = &args.prog;
    let hook = match args.shell {
        Shell::Bash => format!("eval \"$({var}=bash_source {prog})\"\n"),
        Shell::Zsh => format!("eval \"$({var}=zsh_source {prog})\"\n"),
        Shell::Fish => format!("env {var}=fish_source {prog} | source\n"),
    };
    output::write_stdout(&hook);
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write the starter config.toml.
    Init {
        /// Where to write it (default: <home>/config.toml).
        #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
        path: Option<String>,
        /// Overwrite an existing file (keeps only its [managed] values).
        #[arg(long)]
        force: bool,
    },
    /// Print the resolved configuration (API key redacted).
    Show {
        /// Also show where each value came from.
        #[arg(long)]
        sources: bool,
    },
}

pub fn config(ctx: &Ctx, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Init { path, force } => {
            let path = path.map_or_else(|| files::home().join("config.toml"), |p| files::expand(&p));
            if path.exists() && !force {
                return Err(CliError::failed(format!(
                    "Config already exists: {} (use --force to overwrite)",
                    path.display()
                )));
            }
            let managed = if force { settings::existing_managed(&path) } else { Default::default() };
            files::write_private(&path, &settings::template(&managed))
                .map_err(|e| CliError::failed(format!("Failed to write config file: {}: {e}", path.display())))?;
            ctx.print(&format!("{}\n", path.display()));
            Ok(())
        }
        ConfigCommand::Show { sources } => {
            let s = ctx.settings()?;
            let value = if sources { json!({"values": s.values(), "sources": s.sources()}) } else { s.values() };
            ctx.print(&output::value_in(ctx.format, &value));
            Ok(())
        }
    }
}
