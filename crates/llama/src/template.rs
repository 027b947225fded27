//! Chat templates: the Jinja template stored in the GGUF, rendered with minijinja.

use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{context, Environment, Error, ErrorKind};
use serde_json::Value;
use tm_backend::BackendError;

/// Used when a GGUF has no `tokenizer.chat_template` (base models). ChatML is llama.cpp's
/// fallback too.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// The template writes tool declarations and calls itself, in the syntax tool calls
    /// are generated in (`<tool_call>`); otherwise see `tools`' fallback convention.
    pub native_tools: bool,
}

impl ChatTemplate {
    pub fn new(source: &str, bos: String, eos: String) -> Result<Self, String> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these two options on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates are written for Python Jinja: `.strip()`, `.startswith()`, `.items()`...
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        // Hugging Face's `tojson` is Python's `json.dumps` (", " and ": ", no HTML
        // escaping): tool declarations must reach the model as it was trained on them.
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_owned()).map_err(|e| format!("invalid chat template: {e}"))?;
        let native_tools = source.contains("tools") && source.contains(crate::constraint::CALL_OPEN);
        Ok(ChatTemplate { env, bos, eos, native_tools })
    }

    /// Renders the prompt for `messages` (JSON objects with `role` and string `content`)
    /// and the declared `tools` (OpenAI's chat shape). A template error (e.g. roles in an
    /// order the template refuses) is the caller's: 400.
    pub fn render(
        &self,
        messages: &[Value],
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, BackendError> {
        let template = self.env.get_template("chat").map_err(|e| BackendError::Internal(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| {
                let detail = match e.kind() {
                    ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid").to_owned(),
                    _ => e.to_string(),
                };
                BackendError::invalid("messages", format!("the model's chat template rejected them: {detail}"))
            })
    }
}

fn tojson(value: JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(JinjaValue::from_safe_string(python_json(&json, indent)))
}

/// `value` as Python's `json.dumps(value, ensure_ascii=False, indent=indent)` writes it.
pub fn python_json(value: &Value, indent: Option<usize>) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&spaces),
            );
            value.serialize(&mut ser)
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonCompact)),
    };
    match written {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => value.to_string(),
    }
}

/// Python's default separators: `", "` and `": "`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML, String::new(), String::new()).unwrap();
        let out = t.render(&[json!({"role": "user", "content": "hi"})], None, true).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let src = "{% for m in messages %}{% if m['role'] not in ['user'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}{{ m['content'].strip() }}{% endfor %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[json!({"role": "user", "content": "  x "})], None, false).unwrap(), "x");
        let err = t.render(&[json!({"role": "bot", "content": "x"})], None, false).unwrap_err();
        assert!(
            matches!(err, BackendError::InvalidInput { ref message, .. } if message.contains("bad role bot")),
            "{err:?}"
        );
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = ChatTemplate::new(
            "{{ tools[0] | tojson }}|{{ tools[0] | tojson(indent=2) }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let tool = json!({"name": "f<x>", "b": [1, "é"], "a": {}});
        let out = t.render(&[], Some(&[tool]), false).unwrap();
        assert_eq!(out, "{\"name\": \"f<x>\", \"b\": [1, \"é\"], \"a\": {}}|{\n  \"name\": \"f<x>\",\n  \"b\": [\n    1,\n    \"é\"\n  ],\n  \"a\": {}\n}");
    }
}
