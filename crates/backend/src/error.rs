use thiserror::Error;

/// Everything that can go wrong below the HTTP layer. Domain code never picks a status
/// code: the server maps each variant once.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum BackendError {
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),

    /// The request is well-formed JSON but a value is unusable; `param` names the field.
    #[error("`{param}`: {message}")]
    InvalidInput { param: String, message: String },

    #[error(
        "This model's maximum context length is {max_context} tokens. However, you requested \
         {requested} tokens ({prompt} in the prompt, {completion} for the completion). Please \
         reduce the length of the prompt or of `max_tokens`."
    )]
    ContextLengthExceeded { max_context: u64, requested: u64, prompt: u64, completion: u64 },

    /// All engine slots and the wait queue are full.
    #[error("The server is at capacity ({capacity} requests in flight); retry shortly")]
    Overloaded { capacity: usize, retry_after_secs: u64 },

    /// The engine stopped (shutdown or crash).
    #[error("The engine is not running")]
    Unavailable,

    /// Every upstream engine tried failed before answering (refused the connection, 5xx,
    /// sent a malformed stream); nothing reached the client.
    #[error("The upstream engines failed: {0}")]
    UpstreamFailed(String),

    /// Every upstream engine tried sent nothing within the first-byte timeout.
    #[error("The upstream engines did not answer in time: {0}")]
    UpstreamTimeout(String),

    #[error("internal engine error: {0}")]
    Internal(String),
}

impl BackendError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError::InvalidInput { param: param.into(), message: message.into() }
    }
}
