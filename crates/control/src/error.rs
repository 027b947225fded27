use tm_store::StoreError;

/// The control plane's outcomes that are not success. The server maps each to one HTTP
/// status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Bad input; names the field.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: &'static str, message: String },
    /// Missing, malformed, unknown, expired or revoked credentials: one message for all,
    /// so that a guess learns nothing from the answer.
    #[error("invalid or expired credentials")]
    Unauthenticated,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the resource's state refuses it (a reply to a closed ticket).
    #[error("{0}")]
    FailedPrecondition(String),
    /// This installation does not offer the feature (no payment processor, say).
    #[error("{0}")]
    Unimplemented(String),
    /// A rate limit refused it; retry after the given seconds.
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after_secs: u64 },
    /// Not possible right now (the serving side is overloaded or absent); retry later.
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ControlError {
        ControlError::InvalidArgument { field, message: message.into() }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ControlError::AlreadyExists(what),
            other => ControlError::Internal(other.to_string()),
        }
    }
}
