//! Token sampling: a llama.cpp sampler chain from [`tm_backend::SamplingParams`], and the
//! request's constraint (see `constraint`) enforced around it.
//!
//! A constraint is checked on the token the chain picked, and applied to the whole
//! vocabulary only when that token is refused (then the chain picks again from the allowed
//! tokens), as llama.cpp's own server does. Most tokens a model picks under a grammar are
//! allowed, so most steps pay for one check instead of a mask over the vocabulary; and the
//! distribution is unchanged: a token is kept with its probability `p` when allowed, or
//! drawn from the allowed ones renormalised, which is `p / Z` either way.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use tm_backend::SamplingParams;
use tm_scheduler::Token;
use tracing::debug;

use crate::constraint::Constraint;

/// Penalties look back over this many tokens (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// How one choice picks its tokens, built before it reaches the engine thread.
pub struct SamplerSpec {
    pub params: SamplingParams,
    pub constraint: Option<Constraint>,
    /// Tokens that must never be picked (the tool-call opener under `tool_choice: none`).
    pub banned: Vec<Token>,
}

/// A choice's sampling state on the engine thread.
pub struct Sampler {
    chain: LlamaSampler,
    constraint: Option<Enforced>,
    /// The candidates array, reused from token to token (a vocabulary's worth).
    candidates: Vec<LlamaTokenData>,
}

/// A constraint as the engine thread holds it.
enum Enforced {
    Llguidance(Box<Matcher>),
    Gbnf(LlamaSampler),
}

impl Sampler {
    /// Builds the chain. `end_of_generation` lists the model's EOG tokens, masked out under
    /// `ignore_eos` (as llama-server does) unless a constraint may need them to end.
    pub fn new(model: &LlamaModel, spec: SamplerSpec, end_of_generation: &[i32]) -> Result<Sampler, String> {
        let SamplerSpec { params, constraint, banned } = spec;
        let constraint = match constraint {
            None => None,
            Some(Constraint::Llguidance(m)) => Some(Enforced::Llguidance(m)),
            Some(Constraint::Gbnf(g)) => {
                Some(Enforced::Gbnf(LlamaSampler::grammar(model, &g, "root").map_err(|e| format!("grammar: {e}"))?))
            }
        };
        let mut banned = banned;
        if params.ignore_eos && constraint.is_none() {
            banned.extend_from_slice(end_of_generation);
        }
        let chain = chain(model, &params, &banned);
        Ok(Sampler { chain, constraint, candidates: Vec::with_capacity(model.n_vocab().max(0) as usize) })
    }

    /// Picks the next token from the logits of batch entry `index` and records it.
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, index: usize) -> Token {
        let logits = ctx.get_logits_ith(index as i32);
        let mut token = self.pick(logits, false);
        if let Some(c) = self.constraint.as_mut() {
            if !c.allows(token) {
                token = self.pick(logits, true);
            }
        }
        if let Some(c) = self.constraint.as_mut() {
            c.accept(token);
        }
        self.chain.accept(LlamaToken(token));
        token
    }

    /// Runs the chain over `logits`, first masked by the constraint when `constrained`.
    fn pick(&mut self, logits: &[f32], constrained: bool) -> Token {
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)));
        let mut array = LlamaTokenDataArray::new(std::mem::take(&mut self.candidates), false);
        if constrained {
            if let Some(c) = self.constraint.as_mut() {
                c.mask(&mut array);
            }
        }
        array.apply_sampler(&mut self.chain);
        let token = array.selected_token().map_or(0, |t| t.0);
        self.candidates = array.data;
        token
    }
}

impl Enforced {
    fn allows(&mut self, token: Token) -> bool {
        match self {
            Enforced::Llguidance(m) => m.validate_tokens(&[token as u32]).is_ok_and(|n| n == 1),
            Enforced::Gbnf(g) => {
                let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(LlamaToken(token), 0.0, 0.0)], false);
                one.apply_sampler(g);
                one.data.first().is_some_and(|d| d.logit() > f32::NEG_INFINITY)
            }
        }
    }

    fn mask(&mut self, array: &mut LlamaTokenDataArray) {
        match self {
            Enforced::Llguidance(m) => match m.compute_mask_or_eos() {
                Ok(allowed) => {
                    for d in &mut array.data {
                        if !allowed.is_allowed(d.id().0 as u32) {
                            d.set_logit(f32::NEG_INFINITY);
                        }
                    }
                }
                Err(e) => debug!(error = %e, "constraint failed; output is no longer constrained"),
            },
            Enforced::Gbnf(g) => array.apply_sampler(g),
        }
    }

    fn accept(&mut self, token: Token) {
        match self {
            Enforced::Llguidance(m) => {
                if !m.is_stopped() {
                    if let Err(e) = m.consume_token(token as u32) {
                        debug!(error = %e, "constraint refused a token");
                    }
                }
            }
            Enforced::Gbnf(g) => g.accept(LlamaToken(token)),
        }
    }
}

/// The chain follows llama.cpp's order: biases first so that truncation never keeps a
/// forbidden token, then penalties, truncation, temperature and the draw.
fn chain(model: &LlamaModel, p: &SamplingParams, banned: &[Token]) -> LlamaSampler {
    let mut chain = Vec::new();
    let mut biases: Vec<_> = p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b)).collect();
    biases.extend(banned.iter().map(|&t| LlamaLogitBias::new(LlamaToken(t), f32::NEG_INFINITY)));
    if !biases.is_empty() {
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
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
    LlamaSampler::chain_simple(chain)
}
