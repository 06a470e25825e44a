//! What kind of incident line a log line is.
//!
//! # Marks
//!
//! Matched on what the services really log (`orchestrator/src`,
//! `worker/src`); the first rule that applies wins:
//!
//! 1. `fault`: a `fault` or `fault_id` field, or "fault" in the message:
//!    the fault-injection lines of `telemetry/src/faults.rs` ("fault
//!    injection started: this is an experiment, not an incident", "fault
//!    injection ended"; `fault_id`, `kind`), from either service.
//! 2. `breaker`: a `breaker` field or "circuit breaker" in the message: the
//!    orchestrator's "worker circuit breaker changed state" (`worker`,
//!    `breaker` = `closed`, `open`, `half_open`).
//! 3. `refused`: `code` is `overloaded` or `rate_limited`: the
//!    orchestrator's "request refused" (connection, address and process
//!    limits) and "http request refused".
//! 4. `error`: any other wire error code in `code`: the orchestrator's
//!    "request failed", "request ended by the client's doing", "context
//!    failed", "request refused" and "http request refused" for bad input;
//!    the worker's "request rejected".
//! 5. `error`: level ERROR (the worker's "cannot load the voices").
//! 6. `refused`: "refus" in the message, or a `retry_after_ms` field: the
//!    orchestrator's "request refused: the worker is at capacity" and
//!    "handshake refused"; the worker's "request refused: admitted streams
//!    would be late" and "draining: refusing new requests".
//! 7. `error`: level WARN with an `error` field: the worker's "synthesis
//!    failed", "voice not loaded; the others serve", "cannot renew the
//!    registry entry; …"; the orchestrator's "cannot encode the requested
//!    format", "cannot read the worker registry; …", "registry entry
//!    ignored", "accept failed".
//!
//! Why `code` comes before the message text: a line's words can be
//! generic ("request failed") while its code says what happened; the
//! details travel in a `detail` field.

use serde::Serialize;
use serde_json::Value;
use tts_protocol::ErrorCode;

/// What kind of incident line a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// A failure: level ERROR, an error code, or a warning with an error.
    Error,
    /// An admission refusal: overloaded, rate limited, at capacity.
    Refused,
    /// A circuit breaker changed state.
    Breaker,
    /// An injected fault.
    Fault,
}

impl Mark {
    /// The word printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Refused => "refused",
            Self::Breaker => "breaker",
            Self::Fault => "fault",
        }
    }
}

/// The mark `line` deserves, if any (the rules in the module's doc).
pub fn mark(line: &Value) -> Option<Mark> {
    let message = line["message"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let level = line["level"].as_str().unwrap_or_default();
    let has = |field: &str| line.get(field).is_some_and(|v| !v.is_null());
    if has("fault") || has("fault_id") || message.contains("fault") {
        return Some(Mark::Fault);
    }
    if has("breaker") || message.contains("circuit breaker") {
        return Some(Mark::Breaker);
    }
    match line["code"].as_str().and_then(ErrorCode::from_wire) {
        Some(ErrorCode::Overloaded | ErrorCode::RateLimited) => return Some(Mark::Refused),
        Some(_) => return Some(Mark::Error),
        None => {}
    }
    if level.eq_ignore_ascii_case("error") {
        Some(Mark::Error)
    } else if message.contains("refus") || has("retry_after_ms") {
        Some(Mark::Refused)
    } else if level.eq_ignore_ascii_case("warn") && has("error") {
        Some(Mark::Error)
    } else {
        None
    }
}
