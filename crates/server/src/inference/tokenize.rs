//! `POST /tokenize` and `POST /detokenize` (vLLM's shapes).

use axum::extract::State;
use axum::{Extension, Json};
use tm_api::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use tm_backend::{validate, PromptInput, TokenizeInput};
use tm_gateway::{Gateway, Scopes};

use super::completions::single_prompt;
use super::error::ApiError;
use super::json::JsonBody;
use super::AppState;

/// Counted against the caller's tokens-per-minute limits like a generation's prompt: the
/// fewest tokens the text can be before the tokenizer runs (over the limit: 429, no work),
/// the rest after.
#[utoipa::path(post, path = "/tokenize", tag = "inference",
    request_body = TokenizeRequest, responses((status = 200, body = TokenizeResponse)))]
pub async fn tokenize(
    State(state): State<AppState>,
    Extension(scopes): Extension<Scopes>,
    body: JsonBody,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let req: TokenizeRequest = body.parse()?;
    let prompt = match (req.prompt, req.messages) {
        (Some(p), None) => PromptInput::Text(single_prompt(p, "prompt")?),
        (None, Some(m)) => PromptInput::Chat(validate::chat_messages(m)?),
        _ => return Err(ApiError::bad_request(Some("prompt".into()), "send exactly one of `prompt` and `messages`")),
    };
    let least = Gateway::least_tokens(prompt.byte_len());
    state.gateway.take_tokens(&scopes, least).await?;
    let out = state
        .backend
        .tokenize(TokenizeInput {
            model: req.model,
            prompt,
            add_special: req.add_special_tokens.unwrap_or(true),
            add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
        })
        .await?;
    state.gateway.take_tokens(&scopes, (out.tokens.len() as u64).saturating_sub(least)).await?;
    Ok(Json(TokenizeResponse {
        count: out.tokens.len() as u64,
        tokens: out.tokens,
        max_model_len: out.max_context,
        token_strs: out.token_strs,
    }))
}

#[utoipa::path(post, path = "/detokenize", tag = "inference",
    request_body = DetokenizeRequest, responses((status = 200, body = DetokenizeResponse)))]
pub async fn detokenize(State(state): State<AppState>, body: JsonBody) -> Result<Json<DetokenizeResponse>, ApiError> {
    let req: DetokenizeRequest = body.parse()?;
    let prompt = state.backend.detokenize(&req.model, &req.tokens).await?;
    Ok(Json(DetokenizeResponse { prompt }))
}
