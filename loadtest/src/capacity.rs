//! `--find-capacity`: the most load that still meets the targets, searched
//! over closed-loop concurrency (streams back to back) or, with
//! `--rate-search`, over the open-loop arrival rate. The load doubles until
//! a step fails, then bisects between the last step that passed and the
//! first that failed.

use serde::Serialize;
use serde_json::{Value, json};

use crate::run::{Mode, Pace, RunConfig};
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
    /// Largest acceptable share of requests refused with `overloaded`.
    pub refused_ratio: f64,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The load: concurrent sessions, or requests per second.
    pub load: f64,
    /// Whether it met the target.
    pub pass: bool,
    /// Its p99 time to first audio, ms.
    pub ttfa_p99_ms: f64,
    /// Its late frames at the target's buffer.
    pub late_frames: u64,
    /// Its failed requests (refusals not included).
    pub failed: u64,
    /// Its refused requests.
    pub refused: u64,
    /// Seconds of audio received per second.
    pub audio_seconds_per_second: f64,
    /// Mean audio per completed request, seconds.
    pub mean_audio_seconds: f64,
}

impl Target {
    /// Judges one step's report.
    pub fn judge(&self, load: f64, report: &Report) -> Step {
        let late = report
            .underruns
            .iter()
            .find(|u| u.buffer_ms == self.buffer_ms)
            .map_or(u64::MAX, |u| u.late_frames);
        let p99 = report.latency_ms.ttfa.p99;
        let q = &report.requests;
        let refused_ratio = if q.sent == 0 {
            0.0
        } else {
            q.refused as f64 / q.sent as f64
        };
        Step {
            load,
            pass: q.failed == 0
                && q.completed > 0
                && p99 <= self.ttfa_p99_ms
                && late <= self.underruns
                && refused_ratio <= self.refused_ratio,
            ttfa_p99_ms: p99,
            late_frames: late,
            failed: q.failed,
            refused: q.refused,
            audio_seconds_per_second: report.throughput.audio_seconds_per_second,
            mean_audio_seconds: report.audio_seconds / q.completed.max(1) as f64,
        }
    }
}

/// How the load moves between steps.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    /// The first load tried.
    pub start: f64,
    /// The largest load tried.
    pub max: f64,
    /// Bisection stops when the pass/fail interval is this narrow.
    pub resolution: f64,
    /// Loads are whole numbers (concurrency).
    pub whole: bool,
}

impl Search {
    /// Concurrency from 1 up to `max`, to the stream.
    pub fn concurrency(max: usize) -> Self {
        Self {
            start: 1.0,
            max: max as f64,
            resolution: 1.0,
            whole: true,
        }
    }

    /// The next load to try, given the steps so far; `None` when the answer
    /// is known.
    pub fn next(&self, steps: &[Step]) -> Option<f64> {
        let best_pass = steps
            .iter()
            .filter(|s| s.pass)
            .map(|s| s.load)
            .max_by(f64::total_cmp);
        let first_fail = steps
            .iter()
            .filter(|s| !s.pass)
            .map(|s| s.load)
            .min_by(f64::total_cmp);
        let next = match (best_pass, first_fail) {
            (None, None) => self.start,
            // Below the first step: halve, unless that is already too fine.
            (None, Some(f)) if f / 2.0 >= self.resolution && !self.whole => f / 2.0,
            (None, Some(_)) => return None,
            (Some(p), None) if p >= self.max => return None,
            (Some(p), None) => (p * 2.0).min(self.max),
            (Some(p), Some(f)) if f - p <= self.resolution => return None,
            (Some(p), Some(f)) => p + (f - p) / 2.0,
        };
        Some(if self.whole { next.floor() } else { next })
    }
}

/// The answer: the largest load that passed below the first that failed.
pub fn capacity(steps: &[Step]) -> f64 {
    let first_fail = steps
        .iter()
        .filter(|s| !s.pass)
        .map(|s| s.load)
        .min_by(f64::total_cmp)
        .unwrap_or(f64::INFINITY);
    steps
        .iter()
        .filter(|s| s.pass && s.load < first_fail)
        .map(|s| s.load)
        .max_by(f64::total_cmp)
        .unwrap_or(0.0)
}

/// A search as the command line asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// What each step must meet.
    pub target: Target,
    /// How the load moves.
    pub search: Search,
    /// A rate search (open loop) instead of a concurrency search.
    pub rate: Option<RateSearch>,
}

/// The open-loop side of a rate search.
#[derive(Debug, Clone, Copy)]
pub struct RateSearch {
    /// Poisson arrivals (else fixed intervals).
    pub poisson: bool,
    /// The saturation throughput (audio seconds per second) to report the
    /// answer against; measured first when `None`.
    pub saturation: Option<f64>,
}

impl Plan {
    /// How the requests arrive at `load`.
    fn mode(&self, load: f64) -> Mode {
        match self.rate {
            Some(r) => Mode::Open {
                rate: load,
                poisson: r.poisson,
            },
            None => Mode::Closed {
                concurrency: load as usize,
            },
        }
    }

    fn unit(&self) -> &'static str {
        if self.rate.is_some() {
            "req/s"
        } else {
            "streams"
        }
    }
}

/// Runs the search, each step a run of `base` at the step's load measured
/// by `measure`; prints a line per step (standard error) and the answer
/// (standard output). Returns the last step's report and the search as
/// JSON (`target`, `steps`, `capacity`, and for a rate search `rate`);
/// `None` if no step ran.
pub async fn find(
    plan: &Plan,
    base: &RunConfig,
    mut measure: impl AsyncFnMut(&RunConfig) -> Report,
) -> Option<(Report, Value)> {
    let saturation = match plan.rate {
        None => None,
        Some(RateSearch {
            saturation: Some(s),
            ..
        }) => Some(s),
        Some(_) => Some(measure_saturation(base, &mut measure).await),
    };
    let mut steps = Vec::new();
    let mut last = None;
    while let Some(load) = plan.search.next(&steps) {
        let config = RunConfig {
            mode: plan.mode(load),
            ..base.clone()
        };
        let report = measure(&config).await;
        let step = plan.target.judge(load, &report);
        eprintln!(
            "{load:>7.2} {}: p99 TTFA {:>8.1} ms, {} late frames at {} ms, {} refused, {} failed, {:.1} audio s/s → {}",
            plan.unit(),
            step.ttfa_p99_ms,
            step.late_frames,
            plan.target.buffer_ms,
            step.refused,
            step.failed,
            step.audio_seconds_per_second,
            if step.pass { "pass" } else { "FAIL" }
        );
        steps.push(step);
        last = Some(report);
    }
    let result = answer(&plan.target, &steps, saturation);
    Some((last?, result))
}

/// The synthesis throughput: 16 sessions back to back asking for fast
/// delivery, so that the worker never waits for a listener.
async fn measure_saturation(
    base: &RunConfig,
    measure: &mut impl AsyncFnMut(&RunConfig) -> Report,
) -> f64 {
    let config = RunConfig {
        mode: Mode::Closed { concurrency: 16 },
        fast: true,
        pace: Pace::BackToBack,
        ..base.clone()
    };
    let report = measure(&config).await;
    let s = report.throughput.audio_seconds_per_second;
    eprintln!(
        "saturation: {s:.1} audio s/s (16 sessions back to back, fast delivery, {} refused)",
        report.requests.refused
    );
    s
}

/// Prints the answer and returns the search as JSON; with a saturation
/// throughput, the rate also as concurrent streams and as a share of it.
fn answer(target: &Target, steps: &[Step], saturation: Option<f64>) -> Value {
    let answer = capacity(steps);
    let limits = format!(
        "p99 TTFA ≤ {} ms, ≤ {} late frames at a {} ms buffer, ≤ {:.1} % refused",
        target.ttfa_p99_ms,
        target.underruns,
        target.buffer_ms,
        target.refused_ratio * 100.0
    );
    let mut result = json!({"target": target, "steps": steps, "capacity": answer});
    let Some(s) = saturation else {
        println!("capacity: {answer} concurrent streams meet {limits}");
        return result;
    };
    // The passing step's mean audio per request turns a rate into streams.
    let mean_audio = steps
        .iter()
        .filter(|st| st.pass && st.load == answer)
        .map(|st| st.mean_audio_seconds)
        .next()
        .unwrap_or(0.0);
    let streams = answer * mean_audio;
    println!(
        "capacity: {answer:.2} req/s ≈ {streams:.1} concurrent real-time streams \
         ({mean_audio:.2} s of audio each) = {:.0} % of the saturation throughput \
         ({s:.1} audio s/s), meeting {limits}",
        if s > 0.0 { streams / s * 100.0 } else { 0.0 }
    );
    result["rate"] = json!({
        "requests_per_second": answer,
        "mean_audio_seconds": mean_audio,
        "concurrent_streams": streams,
        "saturation_audio_seconds_per_second": s,
        "share_of_saturation": if s > 0.0 { streams / s } else { 0.0 },
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(load: f64, pass: bool) -> Step {
        Step {
            load,
            pass,
            ttfa_p99_ms: 0.0,
            late_frames: 0,
            failed: 0,
            refused: 0,
            audio_seconds_per_second: 0.0,
            mean_audio_seconds: 0.0,
        }
    }

    #[test]
    fn doubles_then_bisects() {
        let search = Search::concurrency(64);
        let mut steps = Vec::new();
        // Suppose up to 11 streams pass.
        while let Some(c) = search.next(&steps) {
            steps.push(step(c, c <= 11.0));
        }
        let tried: Vec<f64> = steps.iter().map(|s| s.load).collect();
        assert_eq!(tried, vec![1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0]);
        assert_eq!(capacity(&steps), 11.0);
    }

    #[test]
    fn stops_at_the_cap_or_at_the_first_failure() {
        let search = Search::concurrency(4);
        let mut steps = Vec::new();
        while let Some(c) = search.next(&steps) {
            steps.push(step(c, true));
        }
        assert_eq!(capacity(&steps), 4.0);
        assert_eq!(search.next(&[step(1.0, false)]), None);
        assert_eq!(capacity(&[step(1.0, false)]), 0.0);
    }

    #[test]
    fn a_rate_search_halves_below_its_start_and_bisects_to_its_resolution() {
        let search = Search {
            start: 2.0,
            max: 64.0,
            resolution: 0.25,
            whole: false,
        };
        let mut steps = Vec::new();
        // Suppose rates up to 1.3 req/s pass.
        while let Some(r) = search.next(&steps) {
            steps.push(step(r, r <= 1.3));
        }
        let tried: Vec<f64> = steps.iter().map(|s| s.load).collect();
        assert_eq!(tried, vec![2.0, 1.0, 1.5, 1.25]);
        assert_eq!(capacity(&steps), 1.25);
    }

    #[test]
    fn refusals_beyond_the_allowance_fail_a_step() {
        let target = Target {
            ttfa_p99_ms: 250.0,
            underruns: 0,
            buffer_ms: 60,
            refused_ratio: 0.01,
        };
        let report = |refused: u64| {
            let mut r: Report = serde_json::from_value(serde_json::json!({
                "schema": crate::stats::SCHEMA, "config": {}, "wall_seconds": 60.0,
                "requests": {"sent": 100, "completed": 100 - refused, "refused": refused,
                    "failed": 0, "errors": {}},
                "throughput": {"requests_per_second": 1.0, "audio_seconds_per_second": 5.0},
                "latency_ms": {}, "underruns": [{"buffer_ms": 60, "late_frames": 0,
                    "late_frame_ratio": 0.0, "requests_with_underrun": 0, "underrun_rate": 0.0}],
                "integrity": {"frames_expected": 0, "frames_received": 0, "lost": 0,
                    "duplicated": 0, "out_of_order": 0, "checksum_failures": 0, "malformed": 0},
                "audio_seconds": 500.0, "timeline": [], "ttfa_curve": []
            }))
            .expect("a report");
            r.latency_ms.ttfa.p99 = 100.0;
            r
        };
        assert!(target.judge(2.0, &report(1)).pass);
        assert!(!target.judge(2.0, &report(2)).pass);
        assert!((target.judge(2.0, &report(0)).mean_audio_seconds - 5.0).abs() < 1e-9);
    }
}
