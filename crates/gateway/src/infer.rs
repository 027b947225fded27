//! The path from an authenticated request to a metered generation, for every surface that
//! starts one (the OpenAI routes, the Control Plane's `models/{id}:chat`), as TGI's `Infer`
//! is for its router: validate the sampling fields, prepare (render the chat template,
//! tokenize, size), admit (price, token limits, hold) and launch. The surfaces map the
//! typed [`GatewayError`] to their own HTTP errors.

use tm_api::SamplingRequest;
use tm_backend::{validate, GenerateRequest, GenerationEvent, Output, OutputFormat, OutputOptions, PromptInput};
use tm_control::keys::KeyHolder;
use tm_control::Principal;

use crate::meter::{Gateway, Scopes};
use crate::metered::Metered;
use crate::GatewayError;

/// Who a generation is for: the key holder (billed), their limit buckets, and the
/// request's id (its settlement key).
pub struct Caller {
    pub holder: KeyHolder,
    pub scopes: Scopes,
    pub request_id: String,
}

/// What a surface sets in its own fields rather than in the shared sampling ones.
#[derive(Debug, Default)]
pub struct Overrides {
    /// Responses' `max_output_tokens`.
    pub max_tokens: Option<u32>,
    /// Responses' `text.format`.
    pub format: Option<OutputFormat>,
}

/// A generation to start, as a surface received it.
pub struct Ask {
    pub model: String,
    pub prompt: PromptInput,
    /// The shared sampling fields, not yet validated.
    pub sampling: SamplingRequest,
    pub overrides: Overrides,
    /// `choices` is taken from the sampling fields' `n`.
    pub output: OutputOptions,
}

impl Gateway {
    /// Validates, prepares, admits and launches `ask` for `caller`. Nothing runs, and
    /// nothing is billed, when any step refuses.
    pub async fn start(&self, caller: &Caller, ask: Ask) -> Result<Metered, GatewayError> {
        let Ask { model, prompt, sampling, overrides, output } = ask;
        let mut valid = validate::sampling(sampling, random_seed())?;
        if let Some(format) = overrides.format {
            valid.sampling.format = format;
        }
        let request = GenerateRequest {
            model,
            prompt,
            sampling: valid.sampling,
            max_tokens: overrides.max_tokens.or(valid.max_tokens),
            stop: valid.stop,
            request_id: caller.request_id.clone(),
            output: OutputOptions { choices: valid.choices, ..output },
        };
        self.refuse_unaffordable(&caller.holder.principal.user_id, &request.model, request.prompt.byte_len()).await?;
        let prepared = self.backend().prepare(request).await?;
        self.admit(&caller.holder, &caller.scopes, &caller.request_id, prepared).await
    }

    /// A chat as a signed-in user rather than an API key (the Control Plane's
    /// `models/{id}:chat`, the console's playground): the same limits, hold and usage
    /// record as an API request, under the pseudo key `control-plane:<user id>`.
    /// `messages`: OpenAI chat messages; at most `max_tokens` are generated; `temperature`:
    /// the model's default when `None`.
    pub async fn signed_in_chat(
        &self,
        principal: Principal,
        model: String,
        messages: Vec<serde_json::Value>,
        max_tokens: u32,
        temperature: Option<f64>,
    ) -> Result<Metered, GatewayError> {
        let key_id = format!("control-plane:{}", principal.user_id);
        let holder = KeyHolder { principal, key_id };
        let scopes = self.scopes(&holder).await?;
        self.check_request(&scopes).await?;
        let caller = Caller { holder, scopes, request_id: uuid::Uuid::new_v4().to_string() };
        let ask = Ask {
            model,
            prompt: PromptInput::Chat(messages),
            sampling: SamplingRequest { temperature, ..SamplingRequest::default() },
            overrides: Overrides { max_tokens: Some(max_tokens), ..Overrides::default() },
            output: OutputOptions::default(),
        };
        self.start(&caller, ask).await
    }

    /// One user message to `model` as a signed-in user ([`Gateway::signed_in_chat`]): the
    /// answer's text, at most [`ONE_SHOT_MAX_TOKENS`] tokens.
    pub async fn one_shot_chat(
        &self,
        principal: Principal,
        model: String,
        message: String,
    ) -> Result<String, GatewayError> {
        let messages = vec![serde_json::json!({"role": "user", "content": message})];
        let mut generation = self.signed_in_chat(principal, model, messages, ONE_SHOT_MAX_TOKENS, None).await?;
        let mut text = String::new();
        while let Some(event) = generation.recv().await {
            match event {
                GenerationEvent::Output { choice: 0, output: Output::Text { text: t, .. } } => text.push_str(&t),
                GenerationEvent::Finished { .. } => {
                    generation.seal().await;
                    return Ok(text);
                }
                GenerationEvent::Failed(e) => {
                    generation.waive();
                    return Err(GatewayError::Internal(e));
                }
                _ => {}
            }
        }
        generation.waive();
        Err(GatewayError::Internal("the engine dropped the request".into()))
    }
}

/// The longest answer of a one-shot chat. The official clients wait 30 s for a Control
/// Plane call, and a small model on 2 CPU cores that runs on to the end of its context
/// (gemma 270M at temperature 1 often does) takes longer than that: 256 tokens take ~10 s.
pub const ONE_SHOT_MAX_TOKENS: u32 = 256;

/// The seed of a request that sets none.
fn random_seed() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}
