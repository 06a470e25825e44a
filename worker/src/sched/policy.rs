//! What the scheduler and the admission test are told to do.

use std::time::Duration;

/// How the scheduler and the admission test behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Synthesis threads (each runs one step at a time).
    pub threads: usize,
    /// A new stream's first step is due this long after it arrives.
    pub first_audio_budget: Duration,
    /// A stream more than this far ahead of its playout clock is parked.
    pub lookahead: Duration,
    /// How far ahead of its due time a real-time stream's frame leaves
    /// (the listener's buffer: steps are not due by it, see
    /// `safety_margin`).
    pub send_ahead: Duration,
    /// A stream's next step is due this long before its first frame
    /// should play.
    pub safety_margin: Duration,
    /// Fraction of the threads' time the admission test may promise away;
    /// the rest absorbs steps that cannot be pre-empted, estimate error and
    /// everything else the machine runs.
    pub efficiency: f64,
    /// Audio seconds of a stream's next step that must be ready by its
    /// deadline all at once (the largest decoder window).
    pub step_audio: Duration,
    /// Refuse requests that do not fit (off: admit up to the hard limit).
    pub admission: bool,
    /// Most steps one thread runs together (their decoder windows in as
    /// few calls as possible); 1 runs one step at a time.
    pub batch: usize,
    /// A step joins the earliest-deadline step's batch only if its own
    /// deadline is at most this much later.
    pub batch_horizon: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threads: 2,
            first_audio_budget: Duration::from_millis(100),
            lookahead: Duration::from_secs(2),
            send_ahead: Duration::from_secs(1),
            safety_margin: Duration::from_millis(100),
            efficiency: 0.8,
            step_audio: Duration::from_millis(1_500),
            admission: true,
            batch: 1,
            batch_horizon: Duration::from_millis(500),
        }
    }
}
