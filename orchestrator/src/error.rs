//! Why the orchestrator could not start or serve, and the exit code each
//! reason gives.

/// The orchestrator failed to start or serve.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

impl OrchestratorError {
    /// The process exit code: 64 for the configuration, 69 for a listener
    /// that cannot be bound or fails.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => tts_telemetry::exit::CONFIG,
            Self::Io(_) => tts_telemetry::exit::UNAVAILABLE,
        }
    }
}
