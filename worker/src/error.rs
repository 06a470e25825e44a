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
    /// The GPU asked for cannot be used.
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
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
                | Self::Gpu(_)
                | Self::Tls { .. }
                | Self::Engine(EngineError::Missing { .. } | EngineError::Config { .. })
        )
    }
}
