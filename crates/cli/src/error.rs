//! The two ways a command fails, as the official CLI tells them apart by exit code.

/// 2: the invocation cannot work (missing token, bad input); 1: it ran and failed.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Failed(String),
    /// Exit with this code; what there was to say is said.
    Exit(u8),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::Failed(message.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Exit(code) => *code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => m,
            CliError::Exit(_) => "",
        }
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
