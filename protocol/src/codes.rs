//! Error codes a client can receive, and how each ending is counted.

use serde::{Deserialize, Serialize};

/// Error codes a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing fields, or a binary message.
    BadRequest,
    /// The text is empty or has nothing to speak.
    EmptyText,
    /// The text is longer than the configured limit.
    TextTooLong,
    /// The requested voice does not exist.
    UnknownVoice,
    /// The worker cannot be reached or is draining.
    WorkerUnavailable,
    /// Too many requests in flight, or admitted streams would be late.
    Overloaded,
    /// The client sends requests faster than its address may.
    RateLimited,
    /// The client did not read a request's audio for too long.
    ClientTooSlow,
    /// The server stopped before the request could finish.
    ShuttingDown,
    /// Anything else, including a frame that failed verification.
    Internal,
}

/// How a request ended, for counting: the `outcome` label of request
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its `end` was sent with every frame.
    Completed,
    /// The client cancelled it.
    Cancelled,
    /// The client's connection went away.
    Disconnected,
    /// The client asked for something it may not have (4xx-like).
    ClientError,
    /// Admission control refused it to protect admitted streams.
    Refused,
    /// The server failed it.
    Failed,
}

impl Outcome {
    /// Every outcome, for creating metric series at start-up.
    pub const ALL: [Self; 6] = [
        Self::Completed,
        Self::Cancelled,
        Self::Disconnected,
        Self::ClientError,
        Self::Refused,
        Self::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Disconnected => "disconnected",
            Self::ClientError => "client_error",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

impl ErrorCode {
    /// Every code, for creating metric series at start-up.
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::EmptyText,
        Self::TextTooLong,
        Self::UnknownVoice,
        Self::WorkerUnavailable,
        Self::Overloaded,
        Self::RateLimited,
        Self::ClientTooSlow,
        Self::ShuttingDown,
        Self::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::EmptyText => "empty_text",
            Self::TextTooLong => "text_too_long",
            Self::UnknownVoice => "unknown_voice",
            Self::WorkerUnavailable => "worker_unavailable",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::ClientTooSlow => "client_too_slow",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }

    /// Parses a code as it appears on the wire (also in the worker's
    /// `tts-error-code` metadata).
    pub fn from_wire(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// How a request that ended with this code is counted: the client's
    /// mistakes, refusals that protect admitted streams, and the server's
    /// own failures (the only ones an error-rate alert should count).
    pub fn outcome(self) -> Outcome {
        match self {
            Self::BadRequest
            | Self::EmptyText
            | Self::TextTooLong
            | Self::UnknownVoice
            | Self::RateLimited
            | Self::ClientTooSlow => Outcome::ClientError,
            Self::Overloaded => Outcome::Refused,
            Self::WorkerUnavailable | Self::ShuttingDown | Self::Internal => Outcome::Failed,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code that is not one of [`ErrorCode::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl std::str::FromStr for ErrorCode {
    type Err = UnknownCode;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::from_wire(code).ok_or_else(|| UnknownCode(code.to_owned()))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
