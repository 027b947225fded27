//! Constrained decoding: the shape output must have (a JSON Schema, any JSON object, tool
//! calls in the Hermes syntax) compiled once per request, before it reaches the engine
//! thread, and enforced token by token while sampling (see `sampler`).
//!
//! llguidance compiles every constraint; `--grammar-engine gbnf` has llama.cpp's own
//! JSON Schema converter and GBNF sampler enforce structured outputs instead (tool calls
//! stay with llguidance), so that the two can be measured against each other.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use tm_backend::{BackendError, OutputFormat, ToolChoice, Tools};

/// Which library enforces structured outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GrammarEngine {
    #[default]
    Llguidance,
    Gbnf,
}

/// A compiled constraint, ready to be sent to the engine thread.
pub enum Constraint {
    Llguidance(Box<Matcher>),
    /// GBNF source: llama.cpp's grammar sampler is built on the engine thread (it cannot
    /// move between threads).
    Gbnf(String),
}

impl Constraint {
    /// An independent copy for another choice of the same request.
    pub fn fork(&self) -> Constraint {
        match self {
            Constraint::Llguidance(m) => Constraint::Llguidance(Box::new(m.deep_clone())),
            Constraint::Gbnf(g) => Constraint::Gbnf(g.clone()),
        }
    }
}

/// How JSON is written under a constraint: Python's `json.dumps` separators, no free
/// whitespace. Small models given free whitespace may emit it forever.
fn json_style() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The token trie of one model's vocabulary and the grammar compiler over it.
pub struct Grammars {
    factory: ParserFactory,
    engine: GrammarEngine,
}

/// What tool calls look like in output: `<tool_call>\n{"name": ..., "arguments": ...}\n
/// </tool_call>`, Qwen 2.5's (Hermes) syntax, for every model.
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

impl Grammars {
    /// Walks the vocabulary once (hundreds of milliseconds for a large one).
    pub fn new(model: &LlamaModel, engine: GrammarEngine) -> Result<Self, String> {
        let env = LlamaSampler::llguidance_tok_env(model);
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| format!("grammar compiler: {e}"))?;
        factory.quiet();
        Ok(Grammars { factory, engine })
    }

    /// The constraint a request's output format and tools call for, if any. Errors name
    /// the field the client set.
    pub fn compile(&self, format: &OutputFormat, tools: Option<&Tools>) -> Result<Option<Constraint>, BackendError> {
        let content = match format {
            OutputFormat::Text => None,
            OutputFormat::JsonObject => Some((json!({"type": "object"}), "response_format".to_owned())),
            OutputFormat::JsonSchema { schema, field, .. } => {
                check_keywords(schema, field)?;
                Some((schema.clone(), field.clone()))
            }
        };
        if let Some(tools) = tools.filter(|t| t.choice != ToolChoice::None) {
            for f in &tools.functions {
                check_keywords(&f.parameters, &f.field)?;
            }
            let lark = tool_grammar(tools, content.as_ref().map(|c| &c.0));
            return self.llguidance(TopLevelGrammar::from_lark(lark), || self.culprit(tools)).map(Some);
        }
        let Some((schema, field)) = content else { return Ok(None) };
        match self.engine {
            GrammarEngine::Llguidance => {
                let grammar = TopLevelGrammar::from_json_schema(styled(&schema));
                self.llguidance(grammar, || field.clone()).map(Some)
            }
            GrammarEngine::Gbnf => {
                let source = schema.to_string();
                llama_cpp_2::json_schema_to_grammar(&source)
                    .map(|g| Some(Constraint::Gbnf(g)))
                    .map_err(|e| BackendError::invalid(field, format!("cannot be enforced: {e}")))
            }
        }
    }

    fn llguidance(&self, grammar: TopLevelGrammar, field: impl FnOnce() -> String) -> Result<Constraint, BackendError> {
        let matcher = Matcher::new(self.factory.create_parser(grammar));
        match matcher.get_error() {
            None => Ok(Constraint::Llguidance(Box::new(matcher))),
            Some(e) => Err(BackendError::invalid(field(), format!("cannot be enforced: {e}"))),
        }
    }

    /// Which function's parameters a tool grammar failed on: each is compiled alone.
    fn culprit(&self, tools: &Tools) -> String {
        for f in &tools.functions {
            let alone =
                Matcher::new(self.factory.create_parser(TopLevelGrammar::from_json_schema(styled(&f.parameters))));
            if alone.is_error() {
                return f.field.clone();
            }
        }
        "tools".into()
    }
}

/// `schema` with our JSON style.
fn styled(schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Object(_) => schema.clone(),
        _ => json!({}),
    };
    schema["x-guidance"] = json_style();
    schema
}

/// The Lark grammar of a request's tool calls. `content` is the schema answers in text
/// must follow when the model may choose (`auto`).
fn tool_grammar(tools: &Tools, content: Option<&Value>) -> String {
    let only = match &tools.choice {
        ToolChoice::Function(name) => Some(name.as_str()),
        _ => None,
    };
    let calls: Vec<Value> = tools
        .functions
        .iter()
        .filter(|f| only.is_none_or(|name| f.name == name))
        .map(|f| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut body =
        if calls.len() == 1 { calls.into_iter().next().unwrap_or_default() } else { json!({"anyOf": calls}) };
    body["x-guidance"] = json_style();
    let several = tools.parallel && only.is_none();
    let more = if several { " (\"\\n\" call)*" } else { "" };
    let open = lark_string(&format!("{CALL_OPEN}\n"));
    let close = lark_string(&format!("\n{CALL_CLOSE}"));
    let start = match (&tools.choice, content) {
        // Content in a given format, or tagged calls.
        (ToolChoice::Auto, Some(schema)) => format!(
            "start: content | head body {close}{more}\ncontent: %json {}\nhead[lazy]: TEXT {open}\nTEXT: /(.|\\n)*/\n",
            styled(schema)
        ),
        // Text, tagged calls, or bare calls: an answer that starts with `{` is calls (see
        // `tool_parser`), and text does not start with `{`.
        (ToolChoice::Auto, None) => {
            let bare_more = if several { " (\"\\n\" body)*" } else { "" };
            format!(
                "start: TEXT? | head body {close}{more} | body{bare_more}\nhead[lazy]: PRE {open}\n\
                 TEXT: /[^{{](.|\\n)*/\nPRE: /([^{{](.|\\n)*)?/\n"
            )
        }
        _ => format!("start: call{more}\n"),
    };
    format!("%llguidance {{}}\n{start}call: {open} body {close}\nbody: %json {body}\n")
}

/// A Lark string literal.
fn lark_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// JSON Schema keywords llguidance enforces, and the annotations it may ignore: any
/// other keyword would be silently unenforced, so it is refused by name.
const ENFORCED: &[&str] = &[
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "const",
    "enum",
    "type",
    "items",
    "additionalItems",
    "prefixItems",
    "minItems",
    "maxItems",
    "properties",
    "additionalProperties",
    "patternProperties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];
const ANNOTATIONS: &[&str] = &[
    "$anchor",
    "$defs",
    "definitions",
    "$schema",
    "$id",
    "id",
    "$comment",
    "title",
    "description",
    "default",
    "readOnly",
    "writeOnly",
    "examples",
    "contentMediaType",
    "contentEncoding",
    "deprecated",
    // OpenAI's flag beside the schema, sometimes sent inside it.
    "strict",
];

/// Refuses, naming its path, the first keyword of `schema` that generation cannot enforce.
pub fn check_keywords(schema: &Value, path: &str) -> Result<(), BackendError> {
    let Value::Object(map) = schema else { return Ok(()) };
    for (key, value) in map {
        let at = format!("{path}.{key}");
        if !ENFORCED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            return Err(BackendError::invalid(
                at,
                format!("the JSON Schema keyword `{key}` cannot be enforced while generating; remove it"),
            ));
        }
        match (key.as_str(), value) {
            ("properties" | "patternProperties" | "$defs" | "definitions", Value::Object(subs)) => {
                for (name, sub) in subs {
                    check_keywords(sub, &format!("{at}.{name}"))?;
                }
            }
            ("anyOf" | "oneOf" | "allOf" | "prefixItems" | "items", Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    check_keywords(sub, &format!("{at}[{i}]"))?;
                }
            }
            ("items" | "additionalItems" | "additionalProperties", sub) => check_keywords(sub, &at)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tm_backend::FunctionTool;

    fn param_of(e: BackendError) -> String {
        match e {
            BackendError::InvalidInput { param, .. } => param,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unenforceable_keywords_are_named_by_path() {
        let schema = json!({
            "type": "object",
            "title": "t",
            "properties": {"age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"not": {}}}},
        });
        let err = check_keywords(&schema, "response_format.json_schema.schema").unwrap_err();
        assert_eq!(param_of(err), "response_format.json_schema.schema.properties.tags.items.not");
        let nested = json!({"anyOf": [{"type": "string"}, {"if": {}}]});
        assert_eq!(param_of(check_keywords(&nested, "s").unwrap_err()), "s.anyOf[1].if");
        assert!(check_keywords(&json!({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"}), "s").is_ok());
    }

    #[test]
    fn tool_grammars_cover_each_choice() {
        let tools = |choice: ToolChoice, parallel: bool| Tools {
            functions: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, name)| FunctionTool {
                    name: (*name).into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                    field: format!("tools[{i}].function.parameters"),
                })
                .collect(),
            choice,
            parallel,
        };
        let required = tool_grammar(&tools(ToolChoice::Required, true), None);
        assert!(required.contains("start: call (\"\\n\" call)*\n"), "{required}");
        assert!(required.contains("\"anyOf\""), "{required}");
        let named = tool_grammar(&tools(ToolChoice::Function("b".into()), true), None);
        assert!(named.contains("start: call\n") && named.contains("\"const\":\"b\"") && !named.contains("anyOf"));
        let auto = tool_grammar(&tools(ToolChoice::Auto, false), None);
        assert!(auto.contains("head[lazy]: PRE \"<tool_call>\\n\""), "{auto}");
        assert!(auto.contains("| body\n"), "bare calls: {auto}");
        assert!(!auto.contains("(\"\\n\" call)*"), "one call only: {auto}");
        let formatted = tool_grammar(&tools(ToolChoice::Auto, true), Some(&json!({"type": "object"})));
        assert!(formatted.contains("content: %json") && !formatted.contains("| body"), "{formatted}");
    }
}
