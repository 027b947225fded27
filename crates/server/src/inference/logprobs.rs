//! Log-probabilities in the two OpenAI shapes: chat's list of entries, completions'
//! parallel lists with character offsets.

use serde_json::{Map, Value};
use tm_api::{ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs};
use tm_backend::TokenLogprob;

/// Chat's `logprobs` for output tokens (prompt entries, which have no log-probability
/// of their own, are not chat's).
pub fn chat(entries: &[TokenLogprob]) -> ChatLogprobs {
    let content = entries
        .iter()
        .filter_map(|e| {
            Some(ChatTokenLogprob {
                token: e.token.clone(),
                logprob: e.logprob?,
                bytes: e.bytes.clone(),
                top_logprobs: e
                    .top
                    .iter()
                    .map(|t| ChatTopLogprob { token: t.token.clone(), logprob: t.logprob, bytes: t.bytes.clone() })
                    .collect(),
            })
        })
        .collect();
    ChatLogprobs { content, refusal: None }
}

/// Completions' `logprobs` for `entries`, whose text starts `offset` characters into the
/// choice's text; `offset` moves past them.
pub fn completion(entries: &[TokenLogprob], offset: &mut usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for e in entries {
        out.tokens.push(e.token.clone());
        out.token_logprobs.push(e.logprob);
        out.top_logprobs.push(e.logprob.map(|_| {
            e.top.iter().map(|t| (t.token.clone(), Value::from(shortest(t.logprob)))).collect::<Map<String, Value>>()
        }));
        out.text_offset.push(*offset);
        *offset += e.token.chars().count();
    }
    out
}

/// An `f32` as the `f64` with its shortest decimal form (`-0.1`, not `-0.10000000149`):
/// JSON numbers in a map are `f64`.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tm_backend::TopLogprob;

    fn entry(token: &str, logprob: Option<f32>) -> TokenLogprob {
        let top = logprob
            .map(|l| vec![TopLogprob { token: token.into(), bytes: token.as_bytes().to_vec(), logprob: l }])
            .unwrap_or_default();
        TokenLogprob { token: token.into(), bytes: token.as_bytes().to_vec(), logprob, top }
    }

    #[test]
    fn completion_offsets_count_characters_and_the_first_prompt_token_has_none() {
        let mut offset = 0;
        let out = completion(&[entry("é", None), entry("ab", Some(-1.0))], &mut offset);
        assert_eq!(out.text_offset, vec![0, 1]);
        assert_eq!(offset, 3);
        assert_eq!(out.token_logprobs, vec![None, Some(-1.0)]);
        assert!(out.top_logprobs[0].is_none());
        assert_eq!(out.top_logprobs[1].as_ref().unwrap()["ab"], -1.0);
        let mut offset = 0;
        let out = completion(&[entry("x", Some(-0.1))], &mut offset);
        assert_eq!(serde_json::to_string(&out.top_logprobs[0]).unwrap(), r#"{"x":-0.1}"#);
        assert_eq!(chat(&[entry("é", None), entry("ab", Some(-1.0))]).content.len(), 1);
    }
}
