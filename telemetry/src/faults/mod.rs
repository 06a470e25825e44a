//! Built-in fault injection, for chaos experiments on a running pipeline
//! (the runbooks' chaos section, after Envoy's fault filter).
//!
//! Off unless the process starts with `--allow-fault-injection` and an
//! `--admin-token`; then `POST /faults` on its admin (orchestrator) or
//! metrics (worker) listener switches on one fault for a bounded time:
//!
//! | kind | applied by | what it does |
//! |---|---|---|
//! | `link_latency` | orchestrator | frames from workers wait `latency_ms` ± `jitter_ms` (a delay line: a steady delay, not a cumulative one); deep pings wait twice that (a round trip) |
//! | `corrupt_frames` | worker | a payload byte of every `every`-th frame is flipped after its checksum |
//! | `drop_frames` | worker | every `every`-th frame is not sent (the next hop sees a gap) |
//! | `slowdown` | worker | each synthesis step takes `factor` times its compute time, the rest spent waiting (as when another process takes the CPU) |
//! | `stall` | worker | synthesis threads stop making progress while they hold their work |
//! | `clipping` | worker | `len_ms` from `from_ms` into each new request amplified 16×, flat against full scale |
//! | `dc_offset` | worker | `offset` added to every sample of each new request |
//! | `dead_air` | worker | `len_ms` of silence from `from_ms` into each new request |
//!
//! Every active fault shows in a gauge present from start-up
//! (`tts_worker_fault_injection_active{kind}`,
//! `tts_orchestrator_fault_injection_active{kind}`), in the orchestrator's
//! `/ready` (`fault_injection`), and in a log line when it starts and
//! ends, so that nobody mistakes an experiment for an incident.
//!
//! The checks on the hot path cost one relaxed atomic load while no fault
//! is active.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

mod kinds;
mod registry;
mod routes;
#[cfg(test)]
mod tests;

pub use kinds::{Component, Fault, KINDS, MAX_DURATION_SECS};
pub use registry::Faults;
pub use routes::{Listing, routes};

/// What `POST /faults` takes: a fault and how long it lasts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct FaultRequest {
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
    /// How long it lasts, seconds (above 0, at most an hour).
    pub duration_s: f64,
}

/// One active fault, as `GET /faults` and `/ready` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveFault {
    /// Identifies this activation.
    pub id: u64,
    /// The process that applies it (`orchestrator`, `worker`).
    pub component: String,
    /// The fault and its parameters.
    #[serde(flatten)]
    pub fault: Fault,
    /// When it started, RFC 3339.
    pub started: String,
    /// Seconds left.
    pub remaining_s: f64,
}

/// Why a fault was not started.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The process was started without `--allow-fault-injection`.
    #[error("fault injection is off: start the process with --allow-fault-injection")]
    Disabled,
    /// No or the wrong bearer token.
    #[error("fault injection needs `authorization: Bearer <the --admin-token>`")]
    Unauthorized,
    /// Another process applies this kind.
    #[error("{kind} is applied by the {applies}, not this {here}: send it there")]
    Elsewhere {
        /// The kind asked for.
        kind: &'static str,
        /// Where it is applied.
        applies: &'static str,
        /// This process.
        here: String,
    },
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl FaultError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Elsewhere { .. } | Self::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}
