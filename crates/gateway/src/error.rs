use std::time::Duration;

use tm_backend::BackendError;

/// Why the gateway refused or failed a request; the server maps each to HTTP once.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Backend(#[from] BackendError),

    #[error("The model `{0}` is not available: it has no active price")]
    NotPriced(String),

    /// Over a requests- or tokens-per-minute limit.
    #[error("Rate limit reached: {limit} {what} per minute for this {scope}; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { what: &'static str, scope: &'static str, limit: u64, retry_after: Duration },

    /// The user already has this many generations running (one key's long streams must not
    /// take every slot from everyone else).
    #[error("Too many requests at once: {limit} generations are already running for this user; retry when one ends")]
    TooManyAtOnce { limit: u32 },

    /// The request alone needs more tokens than the per-minute limit allows.
    #[error("This request needs {tokens} tokens, more than the limit of {limit} tokens per minute for this {scope}; lower `max_tokens` or the prompt")]
    TooLarge { tokens: u64, limit: u64, scope: &'static str },

    #[error(
        "Insufficient balance: this request may cost up to ${needed} (its prompt and `max_tokens` at the \
         model's prices) and ${available} is available; add funds or lower `max_tokens`"
    )]
    InsufficientBalance { needed: String, available: String },

    /// The rate limits are shared (Redis), cannot be checked now, and the policy for that
    /// is to refuse.
    #[error("Rate limits cannot be checked right now (their store does not answer); retry in a moment")]
    LimitsUnavailable,

    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The same outcome in the Control Plane's terms, for the surfaces that start
    /// generations as a signed-in user (`models/{id}:chat`, the console's playground).
    pub fn into_control(self) -> tm_control::ControlError {
        use tm_control::ControlError;
        use BackendError as B;
        let message = self.to_string();
        match self {
            GatewayError::RateLimited { retry_after, .. } => ControlError::ResourceExhausted {
                message,
                // Whole seconds, rounded up: retrying at the indicated time succeeds.
                retry_after_secs: retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
            },
            GatewayError::TooManyAtOnce { .. } => ControlError::ResourceExhausted { message, retry_after_secs: 1 },
            GatewayError::Backend(B::Overloaded { retry_after_secs, .. }) => {
                ControlError::Unavailable { message, retry_after_secs }
            }
            GatewayError::Backend(B::Unavailable) => ControlError::Unavailable { message, retry_after_secs: 5 },
            GatewayError::LimitsUnavailable => ControlError::Unavailable { message, retry_after_secs: 1 },
            GatewayError::NotPriced(_) | GatewayError::Backend(B::ModelNotFound(_)) => ControlError::NotFound(message),
            GatewayError::TooLarge { .. }
            | GatewayError::InsufficientBalance { .. }
            | GatewayError::Backend(B::InvalidInput { .. } | B::ContextLengthExceeded { .. }) => {
                ControlError::FailedPrecondition(message)
            }
            GatewayError::Backend(B::UpstreamFailed(_) | B::UpstreamTimeout(_)) => ControlError::Internal(message),
            GatewayError::Internal(_) | GatewayError::Backend(B::Internal(_)) => {
                tracing::error!(error = %message, "a signed-in chat failed");
                ControlError::Internal("internal server error".into())
            }
        }
    }
}
