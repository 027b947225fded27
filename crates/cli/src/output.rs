//! `--output text|json|yaml|raw|table` (contract §F.1).

use clap::ValueEnum;
use serde_json::Value;

use crate::error::{CliError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
    Raw,
    Table,
}

const TABLE_KEYS: &[&str] =
    &["items", "models", "users", "tickets", "transactions", "pricing", "logs", "products", "activities", "apiKeys"];
const CELL_WIDTH: usize = 48;

/// A server response of a data-returning command: `raw` prints its bytes, the rest parse it.
pub fn body(format: Format, text: &str) -> Result<String> {
    if format == Format::Raw {
        return Ok(format!("{text}\n"));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|_| CliError::failed(format!("Invalid JSON response: expected JSON. Raw response: {text}")))?;
    Ok(value_in(format, &value))
}

/// The human screen of status commands: title, blank line, summary lines, then each
/// non-empty block (`Missing:` and `Warnings:` as `- item`, `Next steps:` numbered).
pub fn screen(title: &str, lines: &[String], missing: &[String], warnings: &[String], next_steps: &[String]) -> String {
    let mut out = format!("{title}\n\n");
    for l in lines {
        out += &format!("{l}\n");
    }
    if !missing.is_empty() {
        out += "\nMissing:\n";
        for m in missing {
            out += &format!("- {m}\n");
        }
    }
    if !warnings.is_empty() {
        out += "\nWarnings:\n";
        for w in warnings {
            out += &format!("- {w}\n");
        }
    }
    if !next_steps.is_empty() {
        out += "\nNext steps:\n";
        for (i, s) in next_steps.iter().enumerate() {
            out += &format!("{}. {s}\n", i + 1);
        }
    }
    out
}

/// A value the CLI made itself (status objects, `config show`): `raw` is compact JSON.
pub fn value_in(format: Format, value: &Value) -> String {
    match format {
        Format::Text | Format::Yaml => yaml(value),
        Format::Json => json_pretty(value),
        Format::Raw => format!("{}\n", json_compact(value)),
        Format::Table => table(value),
    }
}

pub fn json_pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Python's `json.dumps` default spacing: `, ` and `: `.
pub fn json_compact(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(json_compact).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), json_compact(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        scalar => scalar.to_string(),
    }
}

/// YAML as the official CLI writes it (PyYAML's `safe_dump`).
pub fn yaml(value: &Value) -> String {
    crate::pyyaml::dump(value)
}

/// Rows from the top-level list of objects, else the first well-known key holding one, else
/// the only key that does; a mapping without a list is shown as key/value rows.
pub fn table(value: &Value) -> String {
    let rows: Option<&Vec<Value>> = match value {
        Value::Array(items) => Some(items),
        Value::Object(map) => {
            let lists: Vec<(&String, &Vec<Value>)> = map
                .iter()
                .filter_map(|(k, v)| v.as_array().filter(|a| a.iter().all(Value::is_object)).map(|a| (k, a)))
                .collect();
            TABLE_KEYS
                .iter()
                .find_map(|key| lists.iter().find(|(k, _)| k.as_str() == *key).map(|(_, a)| *a))
                .or_else(|| (lists.len() == 1).then(|| lists[0].1))
        }
        _ => None,
    };
    match (rows, value) {
        (Some(rows), _) => {
            let mut columns: Vec<String> = Vec::new();
            for row in rows {
                for key in row.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            let cells: Vec<Vec<String>> =
                rows.iter().map(|r| columns.iter().map(|c| cell(r.get(c).unwrap_or(&Value::Null))).collect()).collect();
            grid(&columns, &cells)
        }
        (None, Value::Object(map)) => {
            let cells: Vec<Vec<String>> = map.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect();
            grid(&["key".to_owned(), "value".to_owned()], &cells)
        }
        (None, other) => format!("{}\n", cell(other)),
    }
}

fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        nested => json_compact(nested),
    };
    if text.chars().count() > CELL_WIDTH {
        format!("{}…", text.chars().take(CELL_WIDTH - 1).collect::<String>())
    } else {
        text
    }
}

fn grid(columns: &[String], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].chars().count()).chain([c.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ") + "\n"
    };
    let mut out = line(columns.to_vec());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// Writes to stdout; a closed pipe (`tm … | head`) is not an error (println! would panic).
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_take_the_known_list_and_truncate_cells() {
        let v = json!({"nextPageToken": "", "pricing": [{"id": "p-1", "isActive": true, "price": {"units": "0"}},
            {"id": "p-2", "name": "x".repeat(60)}]});
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("id   isActive  {:<14}  {:<48}", "price", "name"));
        assert!(lines[2].starts_with("p-1  True      {\"units\": \"0\"}"));
        assert!(lines[3].ends_with(&format!("{}…", "x".repeat(47))));
        assert_eq!(table(&json!({"a": 1})), "key  value\n---  -----\na    1    \n");
        assert_eq!(table(&json!({"users": []})), "");
    }

    #[test]
    fn compact_json_spaces_like_python_and_yaml_quotes_numeric_strings() {
        assert_eq!(json_compact(&json!({"a": [1, "b"], "c": null})), r#"{"a": [1, "b"], "c": null}"#);
        assert_eq!(yaml(&json!({"units": "0", "ok": true})), "units: '0'\nok: true\n");
        assert!(body(Format::Json, "not json").is_err());
        assert_eq!(body(Format::Raw, "not json").ok().as_deref(), Some("not json\n"));
    }
}
