//! JSON input of commands that take a body: `--json TEXT` (or `@path`) > `--file PATH` >
//! piped stdin (when not a terminal and not blank). When a command also has flags, the
//! JSON wins entirely.

use std::io::{IsTerminal, Read};

use clap::Args;
use serde_json::{Map, Value};

use crate::error::{CliError, Result};

#[derive(Args, Debug, Clone)]
pub struct Input {
    /// JSON request body, or @file.json (overrides flags).
    #[arg(long, value_name = "TEXT", display_order = 800)]
    pub json: Option<String>,
    /// Read the JSON request body from a file (overrides flags).
    #[arg(long, value_name = "PATH", display_order = 801, value_hint = clap::ValueHint::FilePath)]
    pub file: Option<String>,
}

/// The input, or the usage error for none.
pub fn read_input(input: &Input) -> Result<Value> {
    optional_input(input)?
        .ok_or_else(|| CliError::usage("No input provided. Use --json, --file, or pipe JSON on stdin."))
}

/// The input when one is given.
pub fn optional_input(input: &Input) -> Result<Option<Value>> {
    let parse = |text: &str, what: &dyn Fn(&serde_json::Error) -> String| {
        serde_json::from_str::<Value>(text).map(Some).map_err(|e| CliError::usage(what(&e)))
    };
    if let Some(j) = &input.json {
        if let Some(path) = j.strip_prefix('@') {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("Failed to read JSON file: {path}: {e}")))?;
            return parse(&text, &|e| format!("Invalid JSON in file: {path}: {e}"));
        }
        return parse(j, &|e| format!("Invalid JSON: {e}"));
    }
    if let Some(path) = &input.file {
        let text =
            std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("Failed to read file: {path}: {e}")))?;
        return parse(&text, &|e| format!("Invalid JSON in file: {path}: {e}"));
    }
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        if !text.trim().is_empty() {
            return parse(&text, &|e| format!("Invalid JSON on stdin: {e}"));
        }
    }
    Ok(None)
}

/// The JSON input as an object (the body), when one is given.
pub fn optional_object(input: &Input) -> Result<Option<Map<String, Value>>> {
    object_or(input, "Request body must be a JSON object.")
}

/// The JSON input as an object, when one is given; `not_object` is the usage error for
/// any other JSON value.
pub fn object_or(input: &Input, not_object: &str) -> Result<Option<Map<String, Value>>> {
    match optional_input(input)? {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CliError::usage(not_object)),
    }
}

/// The JSON input, required, as an object.
pub fn required_object(input: &Input, not_object: &str) -> Result<Map<String, Value>> {
    match read_input(input)? {
        Value::Object(m) => Ok(m),
        _ => Err(CliError::usage(not_object)),
    }
}
