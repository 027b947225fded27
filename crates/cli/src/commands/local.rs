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
        println!("{VERSION}");
        return Ok(());
    }
    if ctx.format == Format::Text {
        println!("tm version\n");
        println!("CLI version: {VERSION}");
        println!("Runtime: Rust (native binary)");
        println!("Distribution: standalone-binary");
        println!("Platform: {platform}");
        println!("Executable: {exe}");
        println!("Package root: {root}");
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

/// The shell a `_TM_COMPLETE=<shell>_source` request asks a script for.
pub fn completion_shell(request: &str) -> Option<clap_complete::Shell> {
    match request.strip_suffix("_source")? {
        "bash" => Some(clap_complete::Shell::Bash),
        "zsh" => Some(clap_complete::Shell::Zsh),
        "fish" => Some(clap_complete::Shell::Fish),
        _ => None,
    }
}

/// Click's completion hook (one line), as the official CLI prints it; the script behind
/// it comes from `completion_shell`.
pub fn completion(args: &CompletionArgs) -> Result<()> {
    let var = format!("_{}_COMPLETE", args.prog.to_uppercase().replace('-', "_"));
    let prog = &args.prog;
    match args.shell {
        Shell::Bash => println!("eval \"$({var}=bash_source {prog})\""),
        Shell::Zsh => println!("eval \"$({var}=zsh_source {prog})\""),
        Shell::Fish => println!("env {var}=fish_source {prog} | source"),
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write the starter config.toml.
    Init {
        /// Where to write it (default: <home>/config.toml).
        #[arg(long, value_name = "FILE")]
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
            println!("{}", path.display());
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
