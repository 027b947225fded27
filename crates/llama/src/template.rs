//! Chat templates: the Jinja template stored in the GGUF, rendered with minijinja.

use minijinja::{context, Environment, Error, ErrorKind};
use tm_backend::BackendError;

/// Used when a GGUF has no `tokenizer.chat_template` (base models). ChatML is llama.cpp's
/// fallback too.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
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
        env.add_template_owned("chat", source.to_owned()).map_err(|e| format!("invalid chat template: {e}"))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders the prompt for `messages` (JSON objects with `role` and string `content`).
    /// A template error (e.g. roles in an order the template refuses) is the caller's: 400.
    pub fn render(&self, messages: &[serde_json::Value], add_generation_prompt: bool) -> Result<String, BackendError> {
        let template = self.env.get_template("chat").map_err(|e| BackendError::Internal(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML, String::new(), String::new()).unwrap();
        let out = t.render(&[json!({"role": "user", "content": "hi"})], true).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let src = "{% for m in messages %}{% if m['role'] not in ['user'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}{{ m['content'].strip() }}{% endfor %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[json!({"role": "user", "content": "  x "})], false).unwrap(), "x");
        let err = t.render(&[json!({"role": "bot", "content": "x"})], false).unwrap_err();
        assert!(
            matches!(err, BackendError::InvalidInput { ref message, .. } if message.contains("bad role bot")),
            "{err:?}"
        );
    }
}
