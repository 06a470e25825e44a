//! `--find-capacity`: the most concurrent streams that still meet the
//! targets. Concurrency doubles until a step fails, then bisects between
//! the last step that passed and the first that failed.

use serde::Serialize;

use crate::stats::Report;

/// What a step must meet.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    /// Largest acceptable p99 time to first audio, ms.
    pub ttfa_p99_ms: f64,
    /// Largest acceptable number of late frames at `buffer_ms`.
    pub underruns: u64,
    /// The jitter buffer the underruns are counted against, ms.
    pub buffer_ms: u64,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Concurrent streams.
    pub concurrency: usize,
    /// Whether it met the target.
    pub pass: bool,
    /// Its p99 time to first audio, ms.
    pub ttfa_p99_ms: f64,
    /// Its late frames at the target's buffer.
    pub late_frames: u64,
    /// Its failed requests.
    pub failed: u64,
}

impl Target {
    /// Judges one step's report.
    pub fn judge(&self, concurrency: usize, report: &Report) -> Step {
        let late = report
            .underruns
            .iter()
            .find(|u| u.buffer_ms == self.buffer_ms)
            .map_or(u64::MAX, |u| u.late_frames);
        let p99 = report.latency_ms.ttfa.p99;
        Step {
            concurrency,
            pass: report.requests.failed == 0
                && report.requests.completed > 0
                && p99 <= self.ttfa_p99_ms
                && late <= self.underruns,
            ttfa_p99_ms: p99,
            late_frames: late,
            failed: report.requests.failed,
        }
    }
}

/// The next concurrency to try, given the steps so far; `None` when the
/// answer is known (the largest passing concurrency, or 0).
pub fn next_step(steps: &[Step], max: usize) -> Option<usize> {
    let best_pass = steps.iter().filter(|s| s.pass).map(|s| s.concurrency).max();
    let first_fail = steps
        .iter()
        .filter(|s| !s.pass)
        .map(|s| s.concurrency)
        .min();
    match (best_pass, first_fail) {
        (None, None) => Some(1),
        (None, Some(_)) => None,
        (Some(p), None) if p >= max => None,
        (Some(p), None) => Some((p * 2).min(max)),
        (Some(p), Some(f)) if f <= p + 1 => None,
        (Some(p), Some(f)) => Some(p + (f - p) / 2),
    }
}

/// The answer: the largest concurrency that passed.
pub fn capacity(steps: &[Step]) -> usize {
    let first_fail = steps
        .iter()
        .filter(|s| !s.pass)
        .map(|s| s.concurrency)
        .min()
        .unwrap_or(usize::MAX);
    steps
        .iter()
        .filter(|s| s.pass && s.concurrency < first_fail)
        .map(|s| s.concurrency)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(concurrency: usize, pass: bool) -> Step {
        Step {
            concurrency,
            pass,
            ttfa_p99_ms: 0.0,
            late_frames: 0,
            failed: 0,
        }
    }

    #[test]
    fn doubles_then_bisects() {
        let mut steps = Vec::new();
        // Suppose up to 11 streams pass.
        while let Some(c) = next_step(&steps, 64) {
            steps.push(step(c, c <= 11));
        }
        let tried: Vec<usize> = steps.iter().map(|s| s.concurrency).collect();
        assert_eq!(tried, vec![1, 2, 4, 8, 16, 12, 10, 11]);
        assert_eq!(capacity(&steps), 11);
    }

    #[test]
    fn stops_at_the_cap_or_at_the_first_failure() {
        let mut steps = Vec::new();
        while let Some(c) = next_step(&steps, 4) {
            steps.push(step(c, true));
        }
        assert_eq!(capacity(&steps), 4);
        assert_eq!(next_step(&[step(1, false)], 8), None);
        assert_eq!(capacity(&[step(1, false)]), 0);
    }
}
