//! Aggregation: HDR histograms (percentiles are never averaged), counts by
//! outcome, and the report that `--json` writes.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::record::{Arrival, Integrity, gaps, late_frames};

/// Version of the JSON report's layout (`loadtest/schema.json`).
pub const SCHEMA: &str = "tts-loadtest/2";

/// One finished request, as the workload hands it over.
#[derive(Debug, Clone)]
pub struct RequestResult {
    /// Seconds since the run started, at the request's scheduled start.
    pub scheduled_at: f64,
    /// Time to connect, if the request opened its own connection.
    pub connect: Option<Duration>,
    /// Scheduled start → first frame.
    pub ttfa: Option<Duration>,
    /// Every frame received.
    pub arrivals: Vec<Arrival>,
    /// Integrity of the stream.
    pub integrity: Integrity,
    /// Error code, if the request failed.
    pub error: Option<String>,
    /// Scheduled start → its `end` or `error`.
    pub ended: Option<Duration>,
    /// For a refusal, the server's `retry_after_ms`.
    pub retry_after: Option<Duration>,
    /// Seconds of audio received.
    pub audio_seconds: f64,
    /// Streamed input: scheduled start → the piece that completed the
    /// first clause was sent.
    pub completed_text: Option<Duration>,
}

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// A latency histogram with microsecond resolution (1 µs to 1 hour, 3
/// significant digits).
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
        )
    }
}

impl Latency {
    /// Records one value.
    pub fn record(&mut self, d: Duration) {
        self.0
            .saturating_record(d.as_micros().clamp(1, 3_600_000_000) as u64);
    }

    /// Records a value in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, 3_600_000_000));
    }

    /// The percentiles, in ms.
    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Percentiles {
            count: self.0.len(),
            mean: self.0.mean() / 1e3,
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p95: ms(self.0.value_at_quantile(0.95)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p999: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
        }
    }

    /// (percentile, ms) points of the distribution, for plots.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
        ]
        .iter()
        .map(|&p| (p, self.0.value_at_percentile(p) as f64 / 1e3))
        .collect()
    }
}

/// Underruns against one jitter buffer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Underruns {
    /// The buffer, ms.
    pub buffer_ms: u64,
    /// Frames that arrived after their playout time.
    pub late_frames: u64,
    /// `late_frames` / frames received.
    pub late_frame_ratio: f64,
    /// Requests with at least one late frame.
    pub requests_with_underrun: u64,
    /// `requests_with_underrun` / requests that received audio.
    pub underrun_rate: f64,
}

/// Everything a run measured: what `--json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// The settings of the run.
    pub config: serde_json::Value,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
    /// Requests sent, completed, failed.
    pub requests: Requests,
    /// Rates.
    pub throughput: Throughput,
    /// Latency percentiles, ms.
    pub latency_ms: LatencyReport,
    /// Underruns, one entry per jitter buffer.
    pub underruns: Vec<Underruns>,
    /// Frame integrity, summed.
    pub integrity: Integrity,
    /// Seconds of audio received.
    pub audio_seconds: f64,
    /// Per-request points for plots: seconds since start, TTFA ms.
    pub timeline: Vec<[f64; 2]>,
    /// TTFA distribution: (percentile, ms).
    pub ttfa_curve: Vec<[f64; 2]>,
}

/// Request counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Requests {
    /// Requests started.
    pub sent: u64,
    /// Requests that ended with `end`.
    pub completed: u64,
    /// Requests refused with `overloaded`: the server protecting the
    /// streams it admitted, not a failure.
    #[serde(default)]
    pub refused: u64,
    /// Requests that ended with any other error.
    pub failed: u64,
    /// Errors by code (server codes, or `connect`, `timeout`, `closed`,
    /// `protocol`), refusals included.
    pub errors: BTreeMap<String, u64>,
}

/// The error code of a refusal.
pub const REFUSED: &str = "overloaded";

/// Rates over the run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Completed requests per second.
    pub requests_per_second: f64,
    /// Seconds of audio received per wall second: the real-time streams
    /// sustained.
    pub audio_seconds_per_second: f64,
}

/// Latency percentiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyReport {
    /// Scheduled start → first frame.
    pub ttfa: Percentiles,
    /// WebSocket ping round trips (side channel).
    pub rtt: Percentiles,
    /// Gaps between consecutive frames of a stream at the client.
    pub frame_gap: Percentiles,
    /// Worker stamp → orchestrator stamp.
    pub worker_to_orchestrator: Percentiles,
    /// Orchestrator stamp → client arrival.
    pub orchestrator_to_client: Percentiles,
    /// Connection setup (when requests open their own).
    pub connect: Percentiles,
    /// Scheduled start → the `overloaded` error, for refused requests.
    #[serde(default)]
    pub refusal: Percentiles,
    /// The wait a refusal asked for (`retry_after_ms`), for refused
    /// requests that carried one.
    #[serde(default)]
    pub retry_after: Percentiles,
    /// Streamed input (`--stream-input`): the piece that completed the
    /// first clause → its first frame.
    #[serde(default)]
    pub first_audio_after_text: Percentiles,
}

/// Accumulates results while the run goes on.
#[derive(Debug, Clone)]
pub struct Aggregate {
    buffers: Vec<Duration>,
    /// TTFA so far (the progress bar reads its p99).
    pub ttfa: Latency,
    rtt: Latency,
    gap: Latency,
    worker_hop: Latency,
    client_hop: Latency,
    connect: Latency,
    refusal: Latency,
    retry_after: Latency,
    after_text: Latency,
    late: Vec<(u64, u64)>,
    frames: u64,
    requests_with_audio: u64,
    requests: Requests,
    integrity: Integrity,
    audio_seconds: f64,
    timeline: Vec<[f64; 2]>,
}

impl Aggregate {
    /// Empty, for these jitter buffers.
    pub fn new(buffers: &[Duration]) -> Self {
        Self {
            buffers: buffers.to_vec(),
            ttfa: Latency::default(),
            rtt: Latency::default(),
            gap: Latency::default(),
            worker_hop: Latency::default(),
            client_hop: Latency::default(),
            connect: Latency::default(),
            refusal: Latency::default(),
            retry_after: Latency::default(),
            after_text: Latency::default(),
            late: vec![(0, 0); buffers.len()],
            frames: 0,
            requests_with_audio: 0,
            requests: Requests::default(),
            integrity: Integrity::default(),
            audio_seconds: 0.0,
            timeline: Vec::new(),
        }
    }

    /// Adds one request.
    pub fn add(&mut self, r: &RequestResult) {
        self.requests.sent += 1;
        match &r.error {
            Some(code) => {
                if code == REFUSED {
                    self.requests.refused += 1;
                    if let Some(t) = r.ended {
                        self.refusal.record(t);
                    }
                    if let Some(wait) = r.retry_after {
                        self.retry_after.record(wait);
                    }
                } else {
                    self.requests.failed += 1;
                }
                *self.requests.errors.entry(code.clone()).or_default() += 1;
            }
            None => self.requests.completed += 1,
        }
        if let Some(c) = r.connect {
            self.connect.record(c);
        }
        if let Some(t) = r.ttfa {
            self.ttfa.record(t);
            self.timeline.push([r.scheduled_at, t.as_secs_f64() * 1e3]);
            if let Some(completed) = r.completed_text {
                self.after_text.record(t.saturating_sub(completed));
            }
        }
        for g in gaps(&r.arrivals) {
            self.gap.record(g);
        }
        for a in &r.arrivals {
            self.worker_hop.record_us(a.worker_to_orchestrator_us);
            self.client_hop.record_us(a.orchestrator_to_client_us);
        }
        if !r.arrivals.is_empty() {
            self.requests_with_audio += 1;
            self.frames += r.arrivals.len() as u64;
            for (i, b) in self.buffers.iter().enumerate() {
                let late = late_frames(&r.arrivals, *b).len() as u64;
                self.late[i].0 += late;
                self.late[i].1 += u64::from(late > 0);
            }
        }
        self.integrity.add(&r.integrity);
        self.audio_seconds += r.audio_seconds;
    }

    /// Adds one ping round trip.
    pub fn add_rtt(&mut self, rtt: Duration) {
        self.rtt.record(rtt);
    }

    /// Requests finished so far.
    pub fn finished(&self) -> u64 {
        self.requests.sent
    }

    /// The report, for a run of `wall` seconds with these settings.
    pub fn report(&self, config: serde_json::Value, wall: Duration) -> Report {
        let secs = wall.as_secs_f64().max(1e-9);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Report {
            schema: SCHEMA.into(),
            config,
            wall_seconds: wall.as_secs_f64(),
            requests: self.requests.clone(),
            throughput: Throughput {
                requests_per_second: self.requests.completed as f64 / secs,
                audio_seconds_per_second: self.audio_seconds / secs,
            },
            latency_ms: LatencyReport {
                ttfa: self.ttfa.percentiles(),
                rtt: self.rtt.percentiles(),
                frame_gap: self.gap.percentiles(),
                worker_to_orchestrator: self.worker_hop.percentiles(),
                orchestrator_to_client: self.client_hop.percentiles(),
                connect: self.connect.percentiles(),
                refusal: self.refusal.percentiles(),
                retry_after: self.retry_after.percentiles(),
                first_audio_after_text: self.after_text.percentiles(),
            },
            underruns: self
                .buffers
                .iter()
                .zip(&self.late)
                .map(|(b, &(frames, requests))| Underruns {
                    buffer_ms: b.as_millis() as u64,
                    late_frames: frames,
                    late_frame_ratio: ratio(frames, self.frames),
                    requests_with_underrun: requests,
                    underrun_rate: ratio(requests, self.requests_with_audio),
                })
                .collect(),
            integrity: self.integrity,
            audio_seconds: self.audio_seconds,
            timeline: self.timeline.clone(),
            ttfa_curve: self.ttfa.curve().into_iter().map(|(p, v)| [p, v]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_apart_from_failures() {
        let mut agg = Aggregate::new(&[]);
        let result = |error: Option<&str>| RequestResult {
            scheduled_at: 0.0,
            connect: None,
            ttfa: None,
            arrivals: Vec::new(),
            integrity: Integrity::default(),
            error: error.map(str::to_owned),
            ended: Some(Duration::from_millis(3)),
            retry_after: error
                .filter(|&e| e == REFUSED)
                .map(|_| Duration::from_millis(700)),
            audio_seconds: 0.0,
            completed_text: None,
        };
        agg.add(&result(Some("overloaded")));
        agg.add(&result(Some("internal")));
        agg.add(&result(None));
        let r = agg.report(serde_json::Value::Null, Duration::from_secs(1));
        assert_eq!(
            (r.requests.refused, r.requests.failed, r.requests.completed),
            (1, 1, 1)
        );
        assert_eq!(r.requests.errors.get("overloaded"), Some(&1));
        assert_eq!(r.latency_ms.refusal.count, 1);
        assert!((r.latency_ms.refusal.p50 - 3.0).abs() < 0.01);
        assert_eq!(r.latency_ms.retry_after.count, 1);
        assert!((r.latency_ms.retry_after.p50 - 700.0).abs() < 1.0);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut l = Latency::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.p999 - 999.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
    }
}
