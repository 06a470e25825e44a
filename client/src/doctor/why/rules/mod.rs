//! The rules: each a small function from the window's figures to the
//! findings it supports. The thresholds are stated here and justified in
//! `docs/runbook.md` (one section per cause).

mod client;
mod link;
mod redis;
#[cfg(test)]
mod tests;
mod worker;

use super::figures::Figures;
use super::{Evidence, Finding};

pub(crate) use client::{admission_refusing, client_slow};
pub(crate) use link::{frame_corruption, network_latency};
pub(crate) use redis::redis_degraded;
pub(crate) use worker::{
    audio_quality, cost_model_off, cpu_starved, worker_down, worker_saturated, worker_stalled,
};

/// Utilisation at or above this share of the admission limit is "at
/// capacity": the next few streams will be refused.
pub(crate) const NEAR_LIMIT: f64 = 0.9;
/// Below this many CPU seconds per second of synthesis-step time, the
/// steps spent most of their time waiting for a CPU (a step that has its
/// core uses about one).
pub(crate) const STARVED_CPU_SHARE: f64 = 0.5;
/// Compute per audio second at or above this multiple of the worker's
/// start-up baseline: synthesis got much slower (ordinary load moves it by
/// well under 1.5×).
pub(crate) const COST_RISE: f64 = 2.0;
/// Less synthesis-step time than this in the window is too little to
/// judge the CPU share from, seconds.
pub(crate) const MIN_STEP_SECONDS: f64 = 0.5;
/// A deep ping's round trip to the worker above this is slow, ms (the
/// gRPC health call itself takes under 2 ms on a LAN).
pub(crate) const SLOW_PING_MS: f64 = 50.0;
/// A median deep ping above this is a critical delay, ms: real-time
/// frames already wait longer than a 250 ms jitter buffer.
pub(crate) const CRITICAL_PING_MS: f64 = 250.0;
/// Without deep pings: worker → orchestrator frame latency p95 above
/// this is slow, seconds.
pub(crate) const SLOW_HOP_S: f64 = 0.1;
/// Total backpressure waits per second of window above which clients are
/// reading slowly (informational unless streams were ended).
pub(crate) const BACKPRESSURE_SHARE: f64 = 0.5;
/// A worker that refused at least this share of the requests that ended
/// in the window (and at least `MIN_REFUSALS` of them) is full, however
/// low its utilisation reads between refusals: a burst of new streams
/// makes a few refusals, not a quarter.
pub(crate) const REFUSED_SHARE: f64 = 0.25;
/// Fewer refusals than this are never "full" on their own.
pub(crate) const MIN_REFUSALS: f64 = 3.0;
/// Late frames above this share of those sent: listeners hear gaps.
pub(crate) const LATE_SHARE: f64 = 0.01;
/// Fewer late frames than this in a window (half a second of audio) are
/// a hiccup that a client's jitter buffer absorbs, whatever their share
/// of a short window's few frames.
pub(crate) const MIN_LATE_FRAMES: f64 = 25.0;
/// A batching worker's calls taking more than this many times what its
/// call model predicts (or less than its inverse) mean admission works
/// from wrong costs; the model follows a steady change within about 50
/// calls, so a ratio this far off says the calls vary in a way it does
/// not capture.
pub(crate) const MODEL_OFF: f64 = 1.5;
/// A Redis PING slower than this is degraded, ms.
pub(crate) const SLOW_REDIS_MS: f64 = 100.0;

/// Every rule, in no particular order (the caller sorts).
pub(crate) fn all(f: &Figures) -> Vec<Finding> {
    let per_worker = f.workers.iter().flat_map(|w| {
        [
            worker_down(f, w),
            worker_stalled(f, w),
            cpu_starved(w),
            worker_saturated(w),
            audio_quality(w),
            cost_model_off(w),
        ]
        .into_iter()
        .flatten()
    });
    let mut findings: Vec<Finding> = per_worker.collect();
    findings.extend(network_latency(f));
    findings.extend(frame_corruption(f));
    findings.extend(client_slow(f));
    findings.extend(redis_degraded(f));
    findings.extend(admission_refusing(f));
    findings
}

fn evidence(metric: impl Into<String>, value: f64, expected: impl Into<String>) -> Evidence {
    Evidence {
        metric: metric.into(),
        value: (value * 1e4).round() / 1e4,
        expected: expected.into(),
    }
}
