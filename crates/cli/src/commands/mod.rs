//! One module per command group.

pub mod activities;
pub mod admin;
pub mod auth;
pub mod billing;
pub mod cost;
pub mod infer;
pub mod input;
pub mod local;
pub mod products;
pub mod readiness;
pub mod setup;
pub mod support;
pub mod users;

use reqwest::Method;
use serde_json::Value;

use crate::error::{CliError, Result};
use crate::http::Call;
use crate::{files, output, Ctx};

pub const CP_HINT_401: &str = "run `tm auth login` to authenticate to the control plane.";

/// A Control Plane call with the saved access token; prints the response body.
pub async fn cp_call(
    ctx: &Ctx,
    method: Method,
    path: &str,
    query: Vec<(String, String)>,
    body: Option<&Value>,
    timeout: Option<f64>,
) -> Result<()> {
    let token = files::access_token()?;
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let base = settings.controlplane_base.value.clone().unwrap_or_default();
    let reply = http
        .send(Call {
            method,
            url: format!("{base}{path}"),
            query,
            body,
            bearer: Some(&token),
            hint_401: Some(CP_HINT_401),
            timeout,
        })
        .await?;
    ctx.print(&output::body(ctx.format, &reply.text)?);
    Ok(())
}

/// Query parameters from optional values (omitted when not given).
pub fn query(pairs: &[(&str, Option<String>)]) -> Vec<(String, String)> {
    pairs.iter().filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v))).collect()
}

/// A path segment percent-encoded with nothing kept (a `/` becomes `%2F`).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A required positional value (`TICKET_ID`), or the usage error naming it.
pub fn required_arg(value: &str, label: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        Err(CliError::usage(format!("{label} is required.")))
    } else {
        Ok(v.to_owned())
    }
}

/// A string as Python's `repr` writes it, as the official CLI's confirmations quote ids.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_repr_quotes_as_python_does() {
        assert_eq!(py_repr("t-1"), "'t-1'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("a\\b\n"), "'a\\\\b\\n'");
    }
}
