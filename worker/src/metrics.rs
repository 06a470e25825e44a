//! Every metric the worker records, by name, in one place. The recorder
//! (Prometheus exporter) is installed by the binary; without one these
//! calls cost next to nothing.

use std::time::Duration;

use tts_frame::{FrameError, QualityStats};

/// Frames checked before sending, by `result`.
pub const FRAMES: &str = "tts_worker_frames_total";
/// Quality warnings on frames sent, by `kind` (clipping, silence, dc_offset).
pub const QUALITY_EVENTS: &str = "tts_worker_frame_quality_events_total";
/// Requests by `outcome`.
pub const REQUESTS: &str = "tts_worker_requests_total";
/// Seconds a request waited for a synthesis thread.
pub const SYNTHESIS_QUEUE_WAIT: &str = "tts_worker_synthesis_queue_wait_seconds";
/// Seconds to synthesise one clause.
pub const CLAUSE_SYNTHESIS: &str = "tts_worker_clause_synthesis_seconds";
/// Synthesis time divided by audio duration, per clause.
pub const SYNTHESIS_RTF: &str = "tts_worker_synthesis_real_time_factor";
/// Seconds from request to first frame emitted.
pub const TIME_TO_FIRST_AUDIO: &str = "tts_worker_time_to_first_audio_seconds";

pub(crate) fn synthesis_queue_wait(waited: Duration) {
    metrics::histogram!(SYNTHESIS_QUEUE_WAIT).record(waited.as_secs_f64());
}

pub(crate) fn clause_synthesized(took: Duration, samples: usize, rate: u32) {
    metrics::histogram!(CLAUSE_SYNTHESIS).record(took.as_secs_f64());
    if samples > 0 && rate > 0 {
        let audio = samples as f64 / f64::from(rate);
        metrics::histogram!(SYNTHESIS_RTF).record(took.as_secs_f64() / audio);
    }
}

pub(crate) fn frame_validated(hop: &'static str, outcome: &Result<QualityStats, FrameError>) {
    match outcome {
        Ok(stats) => {
            metrics::counter!(FRAMES, "hop" => hop, "result" => "ok").increment(1);
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
            metrics::counter!(FRAMES, "hop" => hop, "result" => e.kind()).increment(1);
        }
    }
}

pub(crate) fn request_finished(outcome: &'static str) {
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
}

pub(crate) fn first_frame(after: Duration) {
    metrics::histogram!(TIME_TO_FIRST_AUDIO).record(after.as_secs_f64());
}
