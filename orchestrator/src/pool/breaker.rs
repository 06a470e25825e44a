//! A worker's circuit breaker: consecutive failed requests open it; after
//! a cool-down one probe request goes through, and its outcome closes or
//! reopens it.

use std::time::{Duration, Instant};

/// A breaker's state, as metrics and `/ready` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Its value on the breaker gauge: 0 closed, 1 half-open, 2 open.
    pub(crate) fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// Consecutive failures open it; after the cool-down one request (the
/// probe) goes through: its success closes the breaker, its failure opens
/// it again.
#[derive(Debug)]
pub(super) struct Breaker {
    pub(super) state: BreakerState,
    pub(super) failures: u32,
    pub(super) opened: Instant,
    pub(super) probing: bool,
}

impl Breaker {
    pub(super) fn new() -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            opened: Instant::now(),
            probing: false,
        }
    }

    /// Whether a request may go now (`Some(true)` when it is the probe).
    pub(super) fn allows(&self, now: Instant, cooldown: Duration) -> Option<bool> {
        match self.state {
            BreakerState::Closed => Some(false),
            BreakerState::Open if now.duration_since(self.opened) >= cooldown => Some(true),
            BreakerState::HalfOpen if !self.probing => Some(true),
            BreakerState::Open | BreakerState::HalfOpen => None,
        }
    }

    pub(super) fn start_probe(&mut self) {
        self.state = BreakerState::HalfOpen;
        self.probing = true;
    }

    /// Records an outcome; returns the new state when it changed.
    pub(super) fn record(&mut self, ok: bool, threshold: u32) -> Option<BreakerState> {
        let before = self.state;
        self.probing = false;
        if ok {
            self.failures = 0;
            self.state = BreakerState::Closed;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.state == BreakerState::HalfOpen || self.failures >= threshold {
                self.state = BreakerState::Open;
                self.opened = Instant::now();
            }
        }
        (self.state != before).then_some(self.state)
    }
}
