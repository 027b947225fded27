//! Builds llama.cpp sampler chains.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use tm_backend::SamplingParams;

const JSON_GRAMMAR: &str = include_str!("json.gbnf");

/// Penalties look back over this many tokens (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// The chain follows llama.cpp's order: biases and grammar first so that truncation never
/// keeps a forbidden token, then penalties, truncation, temperature and the draw.
/// `end_of_generation` lists the model's EOG tokens, masked out under `ignore_eos` (as
/// llama-server does) so that generation never continues past an end-of-turn token.
pub fn build(model: &LlamaModel, p: &SamplingParams, end_of_generation: &[i32]) -> Result<LlamaSampler, String> {
    let mut chain = Vec::new();
    let mut biases: Vec<_> = p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b)).collect();
    if p.ignore_eos {
        biases.extend(end_of_generation.iter().map(|&t| LlamaLogitBias::new(LlamaToken(t), f32::NEG_INFINITY)));
    }
    if !biases.is_empty() {
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    if p.json {
        chain.push(LlamaSampler::grammar(model, JSON_GRAMMAR, "root").map_err(|e| format!("json grammar: {e}"))?);
    }
    if p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            PENALTY_LAST_N,
            p.repetition_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.typical_p < 1.0 {
            chain.push(LlamaSampler::typical(p.typical_p, 1));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}
