//! `tm infer doctor`: local readiness for the next serverless request.

use serde_json::json;

use crate::error::{CliError, Result};
use crate::output::{self, Format};
use crate::settings::DEFAULT_SERVERLESS;
use crate::Ctx;

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// `tm infer doctor`: what the next serverless request would use, and what is missing.
pub(super) fn doctor(
    ctx: &Ctx,
    model: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
    exit_status: bool,
) -> Result<()> {
    let settings = ctx.settings()?;
    let option = |v: &Option<String>, name: &str| non_blank(v).map(|_| format!("option:{name}"));
    let base = non_blank(&base_url).unwrap_or(DEFAULT_SERVERLESS.to_owned()).trim_end_matches('/').to_owned();
    let key = non_blank(&api_key).or(settings.gateway_api_key.value.clone());
    let model_value = non_blank(&model);
    let mut warnings = Vec::new();
    if key.is_none() {
        warnings.push(
            "inference API key is not configured. Set gateway_api_key or pass --api-key when sending a request."
                .to_owned(),
        );
    }
    if model_value.is_none() {
        warnings.push(
            "serverless requests require --model because model names are not resolved from local config.".to_owned(),
        );
    }
    warnings.push(
        "Local readiness only. `tm infer doctor` does not live-validate the current inference endpoint or API key."
            .to_owned(),
    );
    let mut first = "tm infer chat --surface serverless ".to_owned();
    if let Some(b) = base_url.as_deref().filter(|b| !b.is_empty()) {
        first += &format!("--base-url \"{b}\" ");
    }
    if key.is_none() {
        first += "--api-key \"YOUR_INFERENCE_API_KEY\" ";
    }
    first += &format!("--model \"{}\" ", model_value.as_deref().unwrap_or("YOUR_SERVERLESS_MODEL_NAME"));
    first += "--json '[{\"role\":\"user\",\"content\":\"Say hello.\"}]'";
    let ready = key.is_some() && model_value.is_some();
    let present = |p: bool| if p { "present" } else { "missing" };
    if ctx.format == Format::Text {
        let line = format!(
            "Serverless: base={base} api_key={} model={}",
            present(key.is_some()),
            present(model_value.is_some())
        );
        ctx.print(&output::screen("tm infer doctor", &[line], &[], &warnings, &[first]));
    } else {
        let data = json!({
            "surface": "serverless",
            "ready_for_direct_request": ready,
            "serverless": {
                "base": base,
                "base_source": option(&base_url, "--base-url").unwrap_or("default:serverless-base".into()),
                "api_key_present": key.is_some(),
                "api_key_source": option(&api_key, "--api-key").or(settings.gateway_api_key.source.clone()),
                "api_key_value": key.as_deref().map(crate::settings::redact),
                "model_id_present": model_value.is_some(),
                "model_id_source": option(&model, "--model"),
                "model_id_value": model_value,
                "model_requirement": "explicit --model required",
            },
            "warnings": warnings,
            "next_steps": [first],
        });
        ctx.print(&output::value_in(ctx.format, &data));
    }
    if exit_status && !ready {
        return Err(CliError::Exit(1));
    }
    Ok(())
}
