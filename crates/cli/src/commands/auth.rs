//! `tm auth …`: the browser login, token refresh, whoami, local status, print-token, logout
//! (contract §C.5, §D).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::readiness::Readiness;
use crate::error::{CliError, Result};
use crate::http::{http_error, Call};
use crate::output::{self, Format};
use crate::progress::Spinner;
use crate::{files, Ctx};

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Sign in through the browser and save tokens.
    Login {
        /// Print the link instead of opening a browser.
        #[arg(long)]
        no_open_browser: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0, value_name = "FLOAT")]
        max_wait_seconds: f64,
        /// Timeout of each HTTP call.
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
    /// Exchange the refresh token for new tokens.
    Refresh {
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
    /// Check the token with the server and print the profile.
    Whoami {
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
    /// Local status of the Control Plane token and gateway credentials (no network).
    Status {
        /// Exit 1 unless everything is ready.
        #[arg(long)]
        exit_status: bool,
    },
    /// Print the raw access token.
    PrintToken {
        #[arg(long)]
        yes_i_know: bool,
    },
    /// Delete the saved tokens.
    Logout {
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(ctx: &Ctx, command: AuthCommand) -> Result<()> {
    match command {
        AuthCommand::Login { no_open_browser, max_wait_seconds, timeout } => {
            if max_wait_seconds <= 0.0 || !max_wait_seconds.is_finite() {
                return Err(CliError::usage("Timeout must be greater than 0 seconds."));
            }
            login(ctx, no_open_browser, max_wait_seconds, timeout).await.map_err(with_token_hint)
        }
        AuthCommand::Refresh { timeout } => refresh(ctx, timeout).await,
        AuthCommand::Whoami { timeout } => whoami(ctx, timeout).await,
        AuthCommand::Status { exit_status } => status(ctx, exit_status),
        AuthCommand::PrintToken { yes_i_know } => {
            if !yes_i_know {
                return Err(CliError::failed(
                    "Refusing to print access token without explicit acknowledgement.\n\
                     Re-run with: tm auth print-token --yes-i-know",
                ));
            }
            let token = files::access_token().map_err(|e| CliError::failed(e.message().to_owned()))?;
            ctx.print(&format!("{token}\n"));
            Ok(())
        }
        AuthCommand::Logout { yes } => {
            let path = files::auth_path();
            if !path.exists() {
                if !ctx.quiet {
                    ctx.print(&format!("Already logged out (no token file): {}\n", path.display()));
                }
                return Ok(());
            }
            if !yes && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                confirm(&format!("Delete token file: {}?", path.display()))?;
            }
            end_session(ctx).await;
            std::fs::remove_file(&path)
                .map_err(|e| CliError::failed(format!("Failed to delete token file: {}: {e}", path.display())))?;
            if !ctx.quiet {
                ctx.print(&format!("Deleted token file: {}\n", path.display()));
            }
            Ok(())
        }
    }
}

/// `<question> [y/N]:` on stdin; anything but yes is `Aborted!` (exit 1).
pub fn confirm(question: &str) -> Result<()> {
    use std::io::Write;
    print!("{question} [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::failed("Aborted!"))
    }
}

fn with_token_hint(e: CliError) -> CliError {
    match e {
        CliError::Failed(m) => {
            CliError::Failed(format!("{m}\n\nHints:\n- Token path: {}", files::auth_path().display()))
        }
        usage => usage,
    }
}

fn object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

async fn login(ctx: &Ctx, no_open_browser: bool, max_wait: f64, timeout: Option<f64>) -> Result<()> {
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let base = settings.controlplane_base.value.clone().unwrap_or_default();
    let start_url = format!("{base}/auth/cli/start");
    let started = http
        .send_raw(&Call {
            method: Method::POST,
            url: start_url.clone(),
            query: Vec::new(),
            body: None,
            bearer: None,
            hint_401: None,
            timeout,
        })
        .await
        .map_err(|e| {
            CliError::failed(format!("Login start failed (network error). url={start_url} error={}", e.message()))
        })?;
    if started.status != StatusCode::OK {
        return Err(CliError::failed(format!("Login start failed: {} {}", started.status.as_u16(), started.text)));
    }
    let start = object(&started.text)
        .ok_or_else(|| CliError::failed(format!("Login start failed: invalid JSON response: {}", started.text)))?;
    let field = |name: &str| {
        start.get(name).and_then(Value::as_str).filter(|v| !v.trim().is_empty()).map(str::to_owned).ok_or_else(|| {
            CliError::failed(format!("Login start failed: missing or invalid '{name}' in JSON response."))
        })
    };
    let (auth_url, code) = (field("auth_url")?, field("cli_code")?);
    let interval = start.get("interval").and_then(Value::as_f64).filter(|i| *i > 0.0).unwrap_or(2.0);
    if !ctx.quiet || no_open_browser {
        eprintln!("Open browser: {auth_url}");
        // Servers that show a user code (ours) ask the person to compare it (RFC 8628 §5.4).
        if let Some(user_code) = start.get("user_code").and_then(Value::as_str).filter(|c| !c.trim().is_empty()) {
            eprintln!("Code: {user_code} (approve only if the browser page shows this same code)");
        }
    }
    if !no_open_browser {
        open_browser(&auth_url);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(max_wait);
    let _spinner = Spinner::start(ctx.quiet, "Waiting for the sign-in to be approved in the browser…");
    let body = json!({"cli_code": code});
    let exchange_url = format!("{base}/auth/cli/exchange");
    loop {
        let reply = http
            .send_raw(&Call {
                method: Method::POST,
                url: exchange_url.clone(),
                query: Vec::new(),
                body: Some(&body),
                bearer: None,
                hint_401: None,
                timeout,
            })
            .await?;
        match reply.status.as_u16() {
            200 => {
                let tokens = object(&reply.text)
                    .ok_or_else(|| CliError::failed(format!("Login failed: invalid JSON response: {}", reply.text)))?;
                let path = files::save_auth(&tokens)?;
                if !ctx.quiet {
                    eprintln!("Login success. Tokens saved to {}", path.display());
                }
                return Ok(());
            }
            202 => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CliError::failed(format!("Login timed out after {} seconds.", g(max_wait))));
                }
                tokio::time::sleep(left.min(Duration::from_secs_f64(interval))).await;
            }
            status => return Err(CliError::failed(format!("Login failed: {status} {}", reply.text))),
        }
    }
}

/// Python's `%g` for the timeout message: `300`, `2.5`.
fn g(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let opener = std::env::var("BROWSER").ok().filter(|b| !b.is_empty()).unwrap_or(opener.to_owned());
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Asks the server to end the session of the saved refresh token, so that a copy of the
/// token file is useless too. Best effort and silent (the official CLI only deletes the
/// file; a server without the route, or no network, changes nothing for the user).
async fn end_session(ctx: &Ctx) {
    let Ok(Some(auth)) = files::read_auth() else { return };
    let Some(refresh_token) = auth.get("refresh_token").and_then(Value::as_str) else { return };
    let Ok(settings) = ctx.settings() else { return };
    let Ok(http) = ctx.http(&settings) else { return };
    let url = format!("{}/auth/cli/logout", settings.controlplane_base.value.clone().unwrap_or_default());
    let body = json!({"refresh_token": refresh_token});
    let call = Call {
        method: Method::POST,
        url,
        query: Vec::new(),
        body: Some(&body),
        bearer: None,
        hint_401: None,
        timeout: Some(5.0),
    };
    let _ = http.send_raw(&call).await;
}

async fn refresh(ctx: &Ctx, timeout: Option<f64>) -> Result<()> {
    let path = files::auth_path();
    let hints = format!("\n\nHints:\n- Run: tm auth login\n- Token path: {}", path.display());
    let auth = files::read_auth()?.unwrap_or_default();
    let Some(refresh_token) = auth.get("refresh_token").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) else {
        return Err(CliError::failed(format!("No refresh token found. Please login first.{hints}")));
    };
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let url = format!("{}/auth/cli/refresh", settings.controlplane_base.value.clone().unwrap_or_default());
    let body = json!({"refresh_token": refresh_token});
    let reply = http
        .send_raw(&Call {
            method: Method::POST,
            url: url.clone(),
            query: Vec::new(),
            body: Some(&body),
            bearer: None,
            hint_401: None,
            timeout,
        })
        .await
        .map_err(|e| CliError::failed(format!("Refresh failed (network error). url={url} error={}", e.message())))?;
    if reply.status != StatusCode::OK {
        return Err(CliError::failed(format!("Refresh failed: {} {}{hints}", reply.status.as_u16(), reply.text)));
    }
    let tokens = object(&reply.text)
        .ok_or_else(|| CliError::failed(format!("Refresh failed: invalid JSON response: {}{hints}", reply.text)))?;
    files::save_auth(&tokens)?;
    if !ctx.quiet {
        ctx.print("Refresh success. Tokens updated.\n");
    }
    Ok(())
}

async fn whoami(ctx: &Ctx, timeout: Option<f64>) -> Result<()> {
    let token = files::access_token().map_err(|e| match e {
        CliError::Usage(m) => {
            CliError::Usage(format!("{m}\nNote: gateway API keys do not authenticate the control plane."))
        }
        other => other,
    })?;
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let url = format!("{}/auth/profile", settings.controlplane_base.value.clone().unwrap_or_default());
    let reply = http
        .send_raw(&Call {
            method: Method::GET,
            url,
            query: Vec::new(),
            body: None,
            bearer: Some(&token),
            hint_401: None,
            timeout,
        })
        .await?;
    if !reply.status.is_success() {
        return Err(CliError::failed(format!(
            "Whoami failed.\n{}\n\nHints:\n- Try: tm auth refresh",
            http_error(&reply, Some(super::CP_HINT_401))
        )));
    }
    ctx.print(&output::body(ctx.format, &reply.text)?);
    Ok(())
}

fn status(ctx: &Ctx, exit_status: bool) -> Result<()> {
    let s = ctx.settings()?;
    let r = Readiness::inspect(&s);
    let mut warnings = r.common_warnings(true);
    warnings.push("Local status only. Use `tm auth whoami` to live-validate Control Plane auth.".into());
    if ctx.format == Format::Text {
        let lines = [r.control_plane_line(&s, true), r.gateway_line(&s)];
        ctx.print(&output::screen("tm auth status", &lines, &[], &warnings, &[]));
    } else {
        let value = json!({
            "ready": {"control_plane": r.control_plane_ready(), "gateway": r.gateway_ready(), "overall": r.overall_ready()},
            "control_plane": r.control_plane_data(&s),
            "gateway": r.gateway_data(&s),
            "sources": s.sources(),
            "warnings": warnings,
        });
        ctx.print(&output::value_in(ctx.format, &value));
    }
    if exit_status && !r.overall_ready() {
        return Err(CliError::Exit(1));
    }
    Ok(())
}
