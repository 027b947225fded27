//! Speculative decoding with drafts from the context, on the real Qwen model: greedy
//! output is the output without it, what was drafted and refused is not counted, and the
//! metrics say how drafts fared.

use serde_json::{json, Value};

use crate::common::{client, post_json, start, Options, QWEN};

const CODE: &str = "pub struct Store {\n    entries: Vec<(String, String)>,\n}\n\nimpl Store {\n    pub fn new() -> Self {\n        Store { entries: Vec::new() }\n    }\n\n    pub fn set(&mut self, key: &str, value: &str) {\n        self.entries.retain(|(k, _)| k != key);\n        self.entries.push((key.to_string(), value.to_string()));\n    }\n\n    pub fn get(&self, key: &str) -> Option<&str> {\n        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())\n    }\n}\n";

fn rewrite() -> Value {
    let ask = format!("Rewrite this code, renaming `Store` to `Cache`. Output only the code.\n\n```rust\n{CODE}```");
    json!({"model": QWEN, "messages": [{"role": "user", "content": ask}], "temperature": 0, "max_tokens": 300})
}

/// An answer of one paragraph, copied from the prompt: its drafts end where the paragraph ends.
fn quote() -> Value {
    let ask = "Loans. Members borrow up to eight items at once for three weeks. Each loan can be renewed twice, online or at the desk, unless another member has reserved the item.\n\nLate returns. There are no fines. A member with an item more than four weeks late cannot borrow until it is returned.\n\nQuote, word for word, the paragraph about loans. Output only the quoted text.";
    json!({"model": QWEN, "messages": [{"role": "user", "content": ask}], "temperature": 0, "max_tokens": 100})
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn greedy_output_is_the_same_with_and_without_drafts() {
    let options = |speculative| Options { model: QWEN, ctx_size: 2048, parallel: 1, speculative, ..Options::default() };
    let (plain, drafting) = (start(options("off")), start(options("ngram")));
    let (status, without) = post_json(&plain, "/v1/chat/completions", rewrite()).await;
    assert_eq!(status, 200, "{without}");
    let (_, with) = post_json(&drafting, "/v1/chat/completions", rewrite()).await;
    let text = |v: &Value| v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(text(&with), text(&without));
    assert!(text(&with).contains("impl Cache"), "{}", text(&with));
    // Usage counts what was returned: drafted-but-refused tokens are not in it.
    assert_eq!(with["usage"]["completion_tokens"], without["usage"]["completion_tokens"]);
    let (_, quoted) = post_json(&plain, "/v1/chat/completions", quote()).await;
    let (_, quoted_with) = post_json(&drafting, "/v1/chat/completions", quote()).await;
    assert_eq!(text(&quoted_with), text(&quoted));
    assert!(text(&quoted).contains("renewed twice"), "{}", text(&quoted));
    let drafted = metric(&drafting, "tensormesh_speculative_drafted_tokens_total").await;
    let accepted = metric(&drafting, "tensormesh_speculative_accepted_tokens_total").await;
    assert!(accepted > 20.0 && accepted <= drafted, "drafted {drafted}, accepted {accepted}");
    let ratio = metric(&drafting, "tensormesh_speculative_acceptance_ratio").await;
    assert!((ratio - accepted / drafted).abs() < 1e-9);
    assert_eq!(metric(&plain, "tensormesh_speculative_drafted_tokens_total").await, 0.0);
}
