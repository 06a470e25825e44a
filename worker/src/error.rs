//! Why the worker failed to start or serve, and which failures are the
//! configuration's.

use crate::engine::EngineError;
use crate::gpu;

/// The worker failed to start or serve.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A voice could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A flag's check failed, as the check says it.
    #[error("{0}")]
    Flag(String),
    /// The GPU asked for cannot be used.
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("{0}")]
    Metrics(String),
    /// A TLS file could not be read.
    #[error("{path}: {source}")]
    Tls {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl WorkerError {
    /// Whether the fault is the configuration's (a flag, a missing voice or
    /// runtime file, an unreadable certificate): exit code 64.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::Flag(_)
                | Self::Gpu(_)
                | Self::Tls { .. }
                | Self::Engine(EngineError::Missing { .. } | EngineError::Config { .. })
        )
    }

    /// The process exit code: 64 for the configuration's fault, 69 for a
    /// port that cannot be bound, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        use tts_telemetry::exit;
        match self {
            Self::Bind { .. } => exit::UNAVAILABLE,
            e if e.is_configuration() => exit::CONFIG,
            _ => exit::FAILURE,
        }
    }
}
