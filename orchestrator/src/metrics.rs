//! Every metric the orchestrator records, by name, in one place, and the
//! process-wide counters the relay keeps for tests and `/health`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tts_frame::{FrameError, QualityStats};

/// Open WebSocket connections.
pub const CONNECTIONS: &str = "tts_orchestrator_websocket_connections";
/// Requests by `outcome` (completed, cancelled, failed) and `code`.
pub const REQUESTS: &str = "tts_orchestrator_requests_total";
/// Requests in flight.
pub const INFLIGHT: &str = "tts_orchestrator_inflight_requests";
/// Frames by `hop` and `result` (ok, bad_size, out_of_sequence,
/// checksum_mismatch, dropped).
pub const FRAMES: &str = "tts_orchestrator_frames_total";
/// Quality warnings on frames received from the worker, by `kind`.
pub const QUALITY_EVENTS: &str = "tts_orchestrator_frame_quality_events_total";
/// Seconds from `synthesize` received to first frame sent.
pub const TIME_TO_FIRST_AUDIO: &str = "tts_orchestrator_time_to_first_audio_seconds";
/// Seconds from the worker's stamp to the orchestrator's receipt.
pub const WORKER_HOP_LATENCY: &str = "tts_orchestrator_worker_hop_latency_seconds";
/// Frames waiting in a connection's queue, sampled on enqueue.
pub const QUEUE_DEPTH: &str = "tts_orchestrator_client_queue_frames";

/// Histogram buckets (seconds) for latencies; boundaries at the targets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.04, 0.06, 0.1, 0.17, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Histogram buckets for queue depth in frames.
pub const QUEUE_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0];

/// Counters the relay keeps in-process: cheap to read, exact, and what
/// `/health` and the tests look at.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Frames received from the worker.
    pub frames_received: AtomicU64,
    /// Frames written to client sockets.
    pub frames_sent: AtomicU64,
    /// Frames held between the worker stream and the client socket now.
    pub frames_buffered: AtomicU64,
    /// The most frames ever held at once.
    pub frames_buffered_high_water: AtomicU64,
    /// Open WebSocket connections.
    pub connections: AtomicU64,
}

impl RelayStats {
    pub(crate) fn frame_enqueued(&self, queue_depth: usize) {
        let now = self.frames_buffered.fetch_add(1, Ordering::Relaxed) + 1;
        self.frames_buffered_high_water
            .fetch_max(now, Ordering::Relaxed);
        metrics::histogram!(QUEUE_DEPTH).record(queue_depth as f64);
    }

    pub(crate) fn frame_dequeued(&self) {
        self.frames_buffered.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        let n = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(CONNECTIONS).set(n as f64);
    }

    pub(crate) fn connection_closed(&self) {
        let n = self.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(CONNECTIONS).set(n as f64);
    }
}

pub(crate) fn frame_received(outcome: &Result<QualityStats, FrameError>, hop_latency: Duration) {
    metrics::histogram!(WORKER_HOP_LATENCY).record(hop_latency.as_secs_f64());
    match outcome {
        Ok(stats) => {
            metrics::counter!(FRAMES, "hop" => "worker_to_orchestrator", "result" => "ok")
                .increment(1);
            let q = stats.quality();
            for (flag, kind) in [
                (q.clipping, "clipping"),
                (q.silence, "silence"),
                (q.dc_offset, "dc_offset"),
            ] {
                if flag {
                    metrics::counter!(QUALITY_EVENTS, "kind" => kind).increment(1);
                }
            }
        }
        Err(e) => {
            metrics::counter!(FRAMES, "hop" => "worker_to_orchestrator", "result" => e.kind())
                .increment(1);
        }
    }
}

pub(crate) fn frames_sent(result: &'static str, n: u64) {
    metrics::counter!(FRAMES, "hop" => "orchestrator_to_client", "result" => result).increment(n);
}

pub(crate) fn first_audio(after: Duration) {
    metrics::histogram!(TIME_TO_FIRST_AUDIO).record(after.as_secs_f64());
}

pub(crate) fn request_finished(outcome: &'static str, code: &'static str) {
    metrics::counter!(REQUESTS, "outcome" => outcome, "code" => code).increment(1);
}

pub(crate) fn inflight(n: usize) {
    metrics::gauge!(INFLIGHT).set(n as f64);
}
