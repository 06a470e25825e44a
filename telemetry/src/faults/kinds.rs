//! The kinds of fault, their parameters and ranges, and which process
//! applies each.

use serde::{Deserialize, Serialize};

use super::FaultError;

/// The longest a fault may last, seconds: an experiment that is forgotten
/// still ends.
pub const MAX_DURATION_SECS: f64 = 3600.0;

/// One fault and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Frames from the worker wait this long at the orchestrator (one
    /// way), plus or minus up to `jitter_ms`; deep pings wait twice that.
    LinkLatency {
        /// Added delay, ms (1–10,000).
        #[serde(default = "defaults::latency_ms")]
        latency_ms: u32,
        /// Uniform jitter around it, ms (0–10,000).
        #[serde(default)]
        jitter_ms: u32,
    },
    /// A payload byte of every `every`-th frame of each request is flipped
    /// after its checksum was computed.
    CorruptFrames {
        /// 1 corrupts every frame.
        #[serde(default = "defaults::every")]
        every: u32,
    },
    /// Every `every`-th frame of each request is not sent.
    DropFrames {
        /// 1 would drop every frame after the first.
        #[serde(default = "defaults::every")]
        every: u32,
    },
    /// Each synthesis step takes `factor` times its compute time.
    Slowdown {
        /// 1–100.
        #[serde(default = "defaults::factor")]
        factor: f64,
    },
    /// Synthesis threads make no progress while they hold work.
    Stall,
    /// A burst of clipping in each new request's audio.
    Clipping {
        /// Start, ms into the request's audio.
        #[serde(default = "defaults::from_ms")]
        from_ms: u32,
        /// Length, ms (1–60,000).
        #[serde(default = "defaults::clip_ms")]
        len_ms: u32,
    },
    /// A constant added to each new request's samples.
    DcOffset {
        /// The offset, in sample units (non-zero).
        #[serde(default = "defaults::offset")]
        offset: i16,
    },
    /// A stretch of silence in each new request's audio.
    DeadAir {
        /// Start, ms into the request's audio.
        #[serde(default = "defaults::from_ms")]
        from_ms: u32,
        /// Length, ms (1–60,000).
        #[serde(default = "defaults::dead_air_ms")]
        len_ms: u32,
    },
}

/// Parameter defaults, so that `{"kind": "stall"}`-style requests work
/// for every kind.
mod defaults {
    pub(super) fn latency_ms() -> u32 {
        150
    }
    pub(super) fn every() -> u32 {
        25
    }
    pub(super) fn factor() -> f64 {
        4.0
    }
    pub(super) fn from_ms() -> u32 {
        300
    }
    pub(super) fn clip_ms() -> u32 {
        200
    }
    pub(super) fn dead_air_ms() -> u32 {
        800
    }
    pub(super) fn offset() -> i16 {
        2000
    }
}

/// Which process applies a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// `tts-orchestrator`.
    Orchestrator,
    /// `tts-worker`.
    Worker,
}

impl Component {
    /// The name used in metric names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator",
            Self::Worker => "worker",
        }
    }

    /// The kinds this component applies.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Orchestrator => &["link_latency"],
            Self::Worker => &[
                "corrupt_frames",
                "drop_frames",
                "slowdown",
                "stall",
                "clipping",
                "dc_offset",
                "dead_air",
            ],
        }
    }

    pub(super) fn gauge(self) -> &'static str {
        match self {
            Self::Orchestrator => "tts_orchestrator_fault_injection_active",
            Self::Worker => "tts_worker_fault_injection_active",
        }
    }
}

/// Every kind, as the API spells it.
pub const KINDS: [&str; 8] = [
    "link_latency",
    "corrupt_frames",
    "drop_frames",
    "slowdown",
    "stall",
    "clipping",
    "dc_offset",
    "dead_air",
];

impl Fault {
    /// Its kind, as the API spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LinkLatency { .. } => "link_latency",
            Self::CorruptFrames { .. } => "corrupt_frames",
            Self::DropFrames { .. } => "drop_frames",
            Self::Slowdown { .. } => "slowdown",
            Self::Stall => "stall",
            Self::Clipping { .. } => "clipping",
            Self::DcOffset { .. } => "dc_offset",
            Self::DeadAir { .. } => "dead_air",
        }
    }

    /// The process that applies it.
    pub fn component(&self) -> Component {
        match self {
            Self::LinkLatency { .. } => Component::Orchestrator,
            _ => Component::Worker,
        }
    }

    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), FaultError> {
        let bad = |what: &str| Err(FaultError::Invalid(what.to_owned()));
        match *self {
            Self::LinkLatency {
                latency_ms,
                jitter_ms,
            } => {
                if !(1..=10_000).contains(&latency_ms) {
                    return bad("latency_ms must be between 1 and 10000");
                }
                if jitter_ms > 10_000 {
                    return bad("jitter_ms must be at most 10000");
                }
            }
            Self::CorruptFrames { every } | Self::DropFrames { every } if every == 0 => {
                return bad("every must be at least 1");
            }
            Self::Slowdown { factor } if !(1.0..=100.0).contains(&factor) => {
                return bad("factor must be between 1 and 100");
            }
            Self::Clipping { len_ms, .. } | Self::DeadAir { len_ms, .. }
                if !(1..=60_000).contains(&len_ms) =>
            {
                return bad("len_ms must be between 1 and 60000");
            }
            Self::DcOffset { offset: 0 } => return bad("offset must not be 0"),
            _ => {}
        }
        Ok(())
    }
}
