//! `tm doctor` (local diagnosis) and `tm init` (first-run report with next steps). Both
//! read only local files; the texts follow the official CLI, `tm init --sync`
//! recommendations included (quirk Q5).

use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::readiness::Readiness;
use crate::error::{CliError, Result};
use crate::output::{self, Format};
use crate::settings::Settings;
use crate::{files, Ctx};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Exit 1 unless the Control Plane token and gateway credentials are ready.
    #[arg(long)]
    exit_status: bool,
}

const FIRST_CHAT: &str = r#"--json '[{"role":"user","content":"Say hello."}]'"#;

fn config_path(s: &Settings) -> String {
    s.config_path.value.clone().unwrap_or_default()
}

pub fn doctor(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    let s = ctx.settings()?;
    let r = Readiness::inspect(&s);
    let config_exists = files::expand(&config_path(&s)).exists();
    let ca_bundle = s.ca_bundle.value.clone();
    let ca_exists = ca_bundle.as_deref().is_some_and(|p| files::expand(p).exists());

    let mut cp_blockers = Vec::new();
    if !r.token_present {
        cp_blockers.push("control_plane_access_token (run `tm auth login`)".to_owned());
    }
    let mut gw_blockers = Vec::new();
    if !r.api_key_present {
        gw_blockers.push("gateway_api_key (set in config/runtime or run `tm init --sync`)".to_owned());
    }
    if r.user_id.is_none() && !r.user_derived {
        gw_blockers.push("gateway_user_id (set in config/runtime or run `tm init --sync`)".to_owned());
    } else if !r.user_valid {
        // Also when the id would be derived from the token, as the official CLI lists it.
        gw_blockers.push("gateway_user_id invalid (set a UUID in config/runtime or rerun `tm init --sync`)".to_owned());
    }
    // Blockers are listed only when not ready (then there is at least one).
    let missing = if r.overall_ready() { Vec::new() } else { [cp_blockers, gw_blockers].concat() };
    let mut warnings = r.common_warnings(false);
    warnings.push(
        "Local readiness only. `tm doctor` does not live-validate the current Control Plane token or inference endpoint."
            .into(),
    );
    if !r.model_present {
        warnings.push("gateway_model_id not set (run `tm init --sync` or pass --model when required)".into());
    }
    if ca_bundle.is_some() && !ca_exists {
        warnings.push(
            "ca_bundle is set but file is missing (set --ca-bundle/TENSORMESH_CA_BUNDLE to a readable PEM file)".into(),
        );
    }
    if matches!(ctx.format, Format::Json | Format::Yaml | Format::Raw) {
        let data = json!({
            "ok": r.overall_ready(),
            "ready": {"control_plane": r.control_plane_ready(), "gateway": r.gateway_ready(), "overall": r.overall_ready()},
            "missing": missing,
            "warnings": warnings,
            "files": {
                "config_path": config_path(&s),
                "config_exists": config_exists,
                "auth_json_path": r.auth_json_path,
                "auth_json_exists": r.auth_json_exists,
                "ca_bundle_path": ca_bundle,
                "ca_bundle_exists": ca_exists,
            },
            "config": s.values(),
            "control_plane": r.control_plane_data(&s),
            "gateway": r.gateway_data(&s),
        });
        ctx.print(&output::value_in(ctx.format, &data));
    } else {
        let mut lines = vec![
            format!("Config file: {} ({})", config_path(&s), if config_exists { "ok" } else { "missing" }),
            r.control_plane_line(&s, false),
            r.gateway_line(&s),
        ];
        if let Some(ca) = &ca_bundle {
            lines.push(format!("CA bundle: {ca} ({})", if ca_exists { "ok" } else { "missing" }));
        }
        ctx.print(&output::screen("tm doctor", &lines, &missing, &warnings, &[]));
    }
    if args.exit_status && !r.overall_ready() {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

pub fn init(ctx: &Ctx) -> Result<()> {
    let s = ctx.settings()?;
    let r = Readiness::inspect(&s);
    let config_exists = Path::new(&files::expand(&config_path(&s))).exists();

    let mut next_steps: Vec<String> = Vec::new();
    if !r.api_key_present || !r.model_present || !r.user_ready() {
        if !r.control_plane_ready() {
            next_steps.push("tm auth login".into());
        }
        next_steps.push("tm init --sync".into());
    }
    if !r.ready_for_direct_request() {
        next_steps.push("tm infer doctor".into());
    }
    next_steps.push(if r.model_present {
        format!("tm infer chat {FIRST_CHAT}")
    } else {
        format!(r#"tm infer chat --model "YOUR_SERVED_GATEWAY_MODEL_NAME" {FIRST_CHAT}"#)
    });

    let mut warnings = r.common_warnings(true);
    let mut optional: Vec<String> = Vec::new();
    if !config_exists {
        optional.push("tm config init".into());
    }
    if !r.token_present {
        optional.push("tm auth login".into());
        if r.token_error.is_none() {
            warnings.push(
                "control plane auth is optional for direct inference requests, but required for Control Plane commands"
                    .into(),
            );
        }
    }
    warnings.push("Local status only. Use `tm auth whoami` and `tm infer chat` for live verification.".into());
    for step in [
        "tm billing pricing serverless list".to_owned(),
        format!(
            r#"tm infer chat --surface serverless --api-key "YOUR_INFERENCE_API_KEY" --model "YOUR_SERVERLESS_MODEL_NAME" {FIRST_CHAT}"#
        ),
    ] {
        if !optional.contains(&step) {
            optional.push(step);
        }
    }
    optional.dedup();
    optional.retain(|step| !next_steps.contains(step));

    if ctx.format != Format::Text {
        let mut control_plane = r.control_plane_data(&s);
        control_plane["ready"] = json!(r.token_present);
        let mut gateway = r.gateway_data(&s);
        gateway["api_key_ready"] = json!(r.api_key_present);
        gateway["user_id_ready"] = json!(r.user_ready());
        gateway["model_id_ready"] = json!(r.model_present);
        let mut data = json!({
            "ready_for_first_request": r.ready_for_direct_request(),
            "config": {"path": config_path(&s), "exists": config_exists, "source": s.config_path.source},
            "control_plane": control_plane,
            "gateway": gateway,
            "warnings": warnings,
            "next_steps": next_steps,
        });
        if !optional.is_empty() {
            data["optional_next_steps"] = Value::from(optional);
        }
        ctx.print(&output::value_in(ctx.format, &data));
        return Ok(());
    }
    let mut lines = vec![
        format!("Config: {} ({})", if config_exists { "ok" } else { "missing" }, config_path(&s)),
        r.control_plane_line(&s, false),
        r.gateway_line(&s),
    ];
    if let Some(e) = &r.token_error {
        lines.extend([String::new(), format!("Control Plane token error: {e}")]);
    }
    let mut text = output::screen("tm init", &lines, &[], &warnings, &next_steps);
    if !optional.is_empty() {
        text += "\nOptional next steps:\n";
        for (i, step) in optional.iter().enumerate() {
            text += &format!("{}. {step}\n", i + 1);
        }
    }
    ctx.print(&text);
    Ok(())
}
