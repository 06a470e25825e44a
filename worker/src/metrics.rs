//! Every metric the worker records, by name, in one place (listed with
//! units and labels in `docs/metrics.md`). The recorder is installed by the
//! binary; without one these calls cost next to nothing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use metrics::Unit;
use tts_protocol::Outcome;

use tts_frame::{Events, FrameError, QualityEvent, QualityStats};

/// Frames checked before sending, by `hop` (`worker`) and `result`.
pub const FRAMES: &str = "tts_worker_frames_total";
/// Quality events in streams sent, by `kind` (clipping, dc_offset,
/// dead_air, leading_silence).
pub const QUALITY_EVENTS: &str = "tts_worker_frame_quality_events_total";
/// Frame RMS level, dBFS.
pub const FRAME_LEVEL: &str = "tts_worker_frame_level_dbfs";
/// Requests by `outcome` (completed, cancelled, client_error, refused,
/// failed).
pub const REQUESTS: &str = "tts_worker_requests_total";
/// Requests ended because their reader took no frame for too long.
pub const STALLED: &str = "tts_worker_stalled_streams_total";
/// Requests admitted and not yet finished.
pub const INFLIGHT: &str = "tts_worker_inflight_requests";
/// Steps being synthesised right now.
pub const CONCURRENT_SYNTHESES: &str = "tts_worker_concurrent_syntheses";
/// Seconds of compute of one synthesis step.
pub const STEP: &str = "tts_worker_step_seconds";
/// Seconds between a step's completion and its deadline (negative: late).
pub const STEP_SLACK: &str = "tts_worker_step_slack_seconds";
/// Frames sent after their due time because synthesis was late, by `kind`
/// (`first_audio`: after the first-audio budget; `playout`: after the
/// frame's time on the playout clock).
pub const DEADLINE_MISSES: &str = "tts_worker_deadline_misses_total";
/// Decoder windows (of as many streams) per decoder call.
pub const DECODER_BATCH: &str = "tts_worker_decoder_batch_size";
/// Seconds from a request's arrival to the end of its first step, by
/// `batched` (whether that step ran together with other streams' steps).
pub const FIRST_STEP: &str = "tts_worker_first_step_seconds";
/// Share of the synthesis threads the admitted streams need.
pub const UTILISATION: &str = "tts_worker_admission_utilisation";
/// Seconds of audio per second this worker admits in all (the admission
/// limit's share of its threads, at the default voice's cost).
pub const REALTIME_CAPACITY: &str = "tts_worker_realtime_capacity";
/// Of that, what is not yet admitted: the real-time audio a new stream
/// (or several) could still be given, in audio-seconds per second.
pub const REALTIME_HEADROOM: &str = "tts_worker_realtime_headroom";
/// Compute seconds per second of audio, the admission estimate, by `voice`.
pub const VOICE_COST: &str = "tts_worker_compute_per_audio_second";
/// The same, as measured by the warm-up at start-up (on a quiet machine):
/// the baseline a rising estimate is compared with, by `voice`.
pub const VOICE_COST_BASELINE: &str = "tts_worker_compute_per_audio_second_baseline";
/// The admission limit: `--admission-efficiency`, the utilisation above
/// which new streams are refused.
pub const ADMISSION_LIMIT: &str = "tts_worker_admission_limit";
/// Times a synthesis thread held work without progress for longer than
/// `--stalled-thread-secs`.
pub const SYNTHESIS_STALLS: &str = "tts_worker_synthesis_stalls_total";
/// Synthesis threads holding work without progress now.
pub const THREADS_STALLED: &str = "tts_worker_synthesis_threads_stalled";
/// Synthesis time divided by audio duration, per step.
pub const SYNTHESIS_RTF: &str = "tts_worker_synthesis_real_time_factor";
/// Seconds from request to first frame emitted.
pub const TIME_TO_FIRST_AUDIO: &str = "tts_worker_time_to_first_audio_seconds";
/// Frames waiting in a request's outgoing queue, sampled on enqueue.
pub const STREAM_QUEUE: &str = "tts_worker_stream_queue_frames";
/// Seconds a request waited for room in its full outgoing queue, per wait
/// (the `_sum` is the total time backpressure held synthesis).
pub const BACKPRESSURE: &str = "tts_worker_backpressure_wait_seconds";
/// Free GPU memory, bytes, by `device` (ordinal; only with `--device cuda`).
pub const GPU_MEMORY_FREE: &str = "tts_worker_gpu_memory_free_bytes";
/// Total GPU memory, bytes, by `device`.
pub const GPU_MEMORY_TOTAL: &str = "tts_worker_gpu_memory_total_bytes";
/// Always 1, by `device`, `name`, `compute_capability` and `driver_version`.
pub const GPU_INFO: &str = "tts_worker_gpu_info";
/// Seconds the voices took to load, by `engine`.
pub const ENGINE_LOAD: &str = "tts_worker_engine_load_seconds";
/// 1 when a voice streams inside a clause, 0 when it synthesises whole
/// clauses, by `voice` (the installed voices: a bounded set).
pub const VOICE_STREAMING: &str = "tts_worker_voice_streaming";
/// Voices in the voice directory that failed to load (the others serve).
pub const VOICES_NOT_LOADED: &str = "tts_worker_voices_not_loaded";
/// Always 1, labelled with `version` and default `engine`.
pub const BUILD_INFO: &str = "tts_worker_build_info";
/// Time the synthesiser's calls took (a batch of steps is one call), by
/// voice.
pub const CALL_SECONDS: &str = "tts_worker_call_seconds";
/// Recent calls' time over what the call model predicted for each, as it
/// stood before learning from it (1: exact), by voice.
pub const CALL_MODEL_RATIO: &str = "tts_worker_call_observed_to_predicted_ratio";
/// The call model: seconds per call (`term="call"`) and per step in it
/// (`term="step"`), by voice.
pub const CALL_COST: &str = "tts_worker_call_cost_seconds";

static INFLIGHT_NOW: AtomicI64 = AtomicI64::new(0);
static SYNTHESES_NOW: AtomicI64 = AtomicI64::new(0);

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's help text, as `describe` registers it.
struct Help {
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    text: &'static str,
}

const fn help(name: &'static str, kind: Kind, text: &'static str) -> Help {
    Help {
        name,
        kind,
        unit: None,
        text,
    }
}

const fn seconds(name: &'static str, kind: Kind, text: &'static str) -> Help {
    Help {
        name,
        kind,
        unit: Some(Unit::Seconds),
        text,
    }
}

/// The help text of every metric but the GPUs' (registered with them).
const HELP: &[Help] = &[
    help(
        FRAMES,
        Kind::Counter,
        "Frames checked before sending, by result.",
    ),
    help(
        QUALITY_EVENTS,
        Kind::Counter,
        "Quality events in streams sent, by kind.",
    ),
    help(
        FRAME_LEVEL,
        Kind::Histogram,
        "RMS level of frames sent, dBFS.",
    ),
    help(REQUESTS, Kind::Counter, "Requests by outcome."),
    help(
        STALLED,
        Kind::Counter,
        "Requests ended because their reader took no frame for too long.",
    ),
    help(INFLIGHT, Kind::Gauge, "Requests admitted and not finished."),
    help(
        CONCURRENT_SYNTHESES,
        Kind::Gauge,
        "Steps being synthesised now.",
    ),
    seconds(STEP, Kind::Histogram, "Compute time of one synthesis step."),
    seconds(
        STEP_SLACK,
        Kind::Histogram,
        "Time between a step's completion and its deadline; negative when late.",
    ),
    help(
        DEADLINE_MISSES,
        Kind::Counter,
        "Frames sent after their due time because synthesis was late, by kind.",
    ),
    help(
        UTILISATION,
        Kind::Gauge,
        "Share of the synthesis threads the admitted streams need.",
    ),
    help(
        REALTIME_CAPACITY,
        Kind::Gauge,
        "Audio seconds per second admitted in all, at the default voice's cost.",
    ),
    help(
        REALTIME_HEADROOM,
        Kind::Gauge,
        "Audio seconds per second still free under the admission limit, at the default voice's cost.",
    ),
    help(
        VOICE_COST,
        Kind::Gauge,
        "Compute seconds per second of audio, the admission estimate, by voice.",
    ),
    help(
        VOICE_COST_BASELINE,
        Kind::Gauge,
        "Compute seconds per second of audio measured by the warm-up at start-up, by voice.",
    ),
    help(
        ADMISSION_LIMIT,
        Kind::Gauge,
        "Utilisation above which new streams are refused (--admission-efficiency).",
    ),
    help(
        SYNTHESIS_STALLS,
        Kind::Counter,
        "Times a synthesis thread held work without progress for too long.",
    ),
    help(
        THREADS_STALLED,
        Kind::Gauge,
        "Synthesis threads holding work without progress now.",
    ),
    help(
        SYNTHESIS_RTF,
        Kind::Histogram,
        "Synthesis time divided by audio duration, per step.",
    ),
    seconds(
        TIME_TO_FIRST_AUDIO,
        Kind::Histogram,
        "Request received to first frame emitted.",
    ),
    help(
        STREAM_QUEUE,
        Kind::Histogram,
        "Frames queued for a request's stream, sampled on enqueue.",
    ),
    seconds(
        BACKPRESSURE,
        Kind::Histogram,
        "Waits for room in a request's full stream queue.",
    ),
    help(
        DECODER_BATCH,
        Kind::Histogram,
        "Decoder windows (of as many streams) per decoder call.",
    ),
    seconds(
        FIRST_STEP,
        Kind::Histogram,
        "Request arrival to the end of its first step, by whether that step was batched.",
    ),
    seconds(ENGINE_LOAD, Kind::Gauge, "Time the voices took to load."),
    seconds(
        CALL_SECONDS,
        Kind::Histogram,
        "Time the synthesiser's calls took (a batch of steps is one call), by voice.",
    ),
    help(
        CALL_MODEL_RATIO,
        Kind::Gauge,
        "Recent calls' time over what the call model predicted for them (1: exact), by voice.",
    ),
    seconds(
        CALL_COST,
        Kind::Gauge,
        "The call model: cost per call (term=call) and per step in it (term=step), by voice.",
    ),
    help(BUILD_INFO, Kind::Gauge, "Build information; always 1."),
    help(
        VOICE_STREAMING,
        Kind::Gauge,
        "Whether a voice streams inside a clause (1) or not (0).",
    ),
    help(
        VOICES_NOT_LOADED,
        Kind::Gauge,
        "Voices in the voice directory that failed to load.",
    ),
];

/// Outcomes a worker counts a request under (a client that goes away is
/// `cancelled` here: the worker cannot tell it from a cancel).
const OUTCOMES: [Outcome; 5] = [
    Outcome::Completed,
    Outcome::Cancelled,
    Outcome::ClientError,
    Outcome::Refused,
    Outcome::Failed,
];

/// Registers the help text of every metric (promtool requires it) and
/// creates every known series at zero (a series that first appears at 1
/// is invisible to `increase()`).
pub(crate) fn describe() {
    for h in HELP {
        metrics::with_recorder(|r| {
            let (name, text) = (h.name.into(), h.text.into());
            match h.kind {
                Kind::Counter => r.describe_counter(name, h.unit, text),
                Kind::Gauge => r.describe_gauge(name, h.unit, text),
                Kind::Histogram => r.describe_histogram(name, h.unit, text),
            }
        });
    }
    metrics::gauge!(VOICES_NOT_LOADED).set(0.0);
    metrics::gauge!(INFLIGHT).set(0.0);
    metrics::gauge!(CONCURRENT_SYNTHESES).set(0.0);
    metrics::gauge!(UTILISATION).set(0.0);
    metrics::gauge!(THREADS_STALLED).set(0.0);
    metrics::counter!(SYNTHESIS_STALLS).absolute(0);
    for kind in ["first_audio", "playout"] {
        metrics::counter!(DEADLINE_MISSES, "kind" => kind).absolute(0);
    }
    for outcome in OUTCOMES {
        metrics::counter!(REQUESTS, "outcome" => outcome.as_str()).absolute(0);
    }
    metrics::counter!(STALLED).absolute(0);
    for result in ["ok", "bad_size", "out_of_sequence", "checksum_mismatch"] {
        metrics::counter!(FRAMES, "hop" => "worker", "result" => result).absolute(0);
    }
    for event in QualityEvent::ALL {
        metrics::counter!(QUALITY_EVENTS, "kind" => event.as_str()).absolute(0);
    }
}

/// The GPUs as last seen.
pub(crate) fn gpus(gpus: &[crate::gpu::GpuInfo]) {
    use metrics::describe_gauge;
    describe_gauge!(GPU_MEMORY_FREE, Unit::Bytes, "Free GPU memory.");
    describe_gauge!(GPU_MEMORY_TOTAL, Unit::Bytes, "Total GPU memory.");
    describe_gauge!(GPU_INFO, "The GPU's name, capability and driver; always 1.");
    for g in gpus {
        let device = g.index.to_string();
        metrics::gauge!(GPU_MEMORY_FREE, "device" => device.clone())
            .set(g.free_memory_bytes as f64);
        metrics::gauge!(GPU_MEMORY_TOTAL, "device" => device.clone())
            .set(g.total_memory_bytes as f64);
        metrics::gauge!(GPU_INFO, "device" => device, "name" => g.name.clone(),
            "compute_capability" => g.compute_capability.clone(),
            "driver_version" => g.driver_version.clone())
        .set(1.0);
    }
}

pub(crate) fn stalled() {
    metrics::counter!(STALLED).increment(1);
}

pub(crate) fn voices_loaded(engine: &'static str, took: Duration) {
    metrics::gauge!(ENGINE_LOAD, "engine" => engine).set(took.as_secs_f64());
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "engine" => engine)
        .set(1.0);
}

pub(crate) fn voice_skipped() {
    metrics::gauge!(VOICES_NOT_LOADED).increment(1.0);
}

pub(crate) fn voice_streams(voice: &str, streaming: bool) {
    metrics::gauge!(VOICE_STREAMING, "voice" => voice.to_owned()).set(if streaming {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn step_computed(took: Duration, audio_seconds: f64) {
    metrics::histogram!(STEP).record(took.as_secs_f64());
    if audio_seconds > 0.0 {
        metrics::histogram!(SYNTHESIS_RTF).record(took.as_secs_f64() / audio_seconds);
    }
}

/// A step whose first frame is due at `due` finished at `finished`.
pub(crate) fn step_finished(due: Instant, finished: Instant) {
    let slack = if finished <= due {
        (due - finished).as_secs_f64()
    } else {
        -(finished - due).as_secs_f64()
    };
    metrics::histogram!(STEP_SLACK).record(slack);
}

pub(crate) fn decoder_batch(windows: usize) {
    metrics::histogram!(DECODER_BATCH).record(windows as f64);
}

/// A request's first step ended `after` its arrival, `batched` or not.
pub(crate) fn first_step(after: Duration, batched: bool) {
    let batched = if batched { "true" } else { "false" };
    metrics::histogram!(FIRST_STEP, "batched" => batched).record(after.as_secs_f64());
}

pub(crate) fn deadline_miss(kind: &'static str) {
    metrics::counter!(DEADLINE_MISSES, "kind" => kind).increment(1);
}

/// The admitted load: `utilisation` of `threads` under the admission
/// `limit`, and, at `cost` compute seconds per audio second, the real-time
/// audio that fits in all and that is still free.
pub(crate) fn load(utilisation: f64, limit: f64, threads: usize, cost: f64) {
    metrics::gauge!(UTILISATION).set(utilisation);
    let (capacity, headroom) = realtime(utilisation, limit, threads, cost);
    metrics::gauge!(REALTIME_CAPACITY).set(capacity);
    metrics::gauge!(REALTIME_HEADROOM).set(headroom);
}

/// Audio-seconds per second admitted in all, and still free.
fn realtime(utilisation: f64, limit: f64, threads: usize, cost: f64) -> (f64, f64) {
    if cost.is_nan() || cost <= 0.0 {
        return (0.0, 0.0);
    }
    let per_share = threads as f64 / cost;
    (
        limit * per_share,
        (limit - utilisation).max(0.0) * per_share,
    )
}

pub(crate) fn voice_cost_baseline(voice: &str, cost: f64) {
    metrics::gauge!(VOICE_COST_BASELINE, "voice" => voice.to_owned()).set(cost);
}

pub(crate) fn admission_limit(efficiency: f64) {
    metrics::gauge!(ADMISSION_LIMIT).set(efficiency);
}

/// A thread was found stalled (`true`) or progressing again; `now` is how
/// many are stalled.
pub(crate) fn thread_stall(started: bool, now: usize) {
    if started {
        metrics::counter!(SYNTHESIS_STALLS).increment(1);
    }
    metrics::gauge!(THREADS_STALLED).set(now as f64);
}

/// A call of the voice's synthesiser took `took` seconds.
pub(crate) fn call(voice: &str, took: f64) {
    metrics::histogram!(CALL_SECONDS, "voice" => voice.to_owned()).record(took);
}

/// A batching voice's call model as now fitted, and `ratio`: what recent
/// calls took over what it predicted for them (`None` before any call).
pub(crate) fn call_model(voice: &str, fit: crate::synth::cost::Fit, ratio: Option<f64>) {
    metrics::gauge!(CALL_COST, "voice" => voice.to_owned(), "term" => "call").set(fit.per_call);
    metrics::gauge!(CALL_COST, "voice" => voice.to_owned(), "term" => "step").set(fit.per_step);
    if let Some(ratio) = ratio {
        metrics::gauge!(CALL_MODEL_RATIO, "voice" => voice.to_owned()).set(ratio);
    }
}

pub(crate) fn voice_cost(voice: &str, cost: f64) {
    metrics::gauge!(VOICE_COST, "voice" => voice.to_owned()).set(cost);
}

pub(crate) fn frame_validated(outcome: &Result<QualityStats, FrameError>, events: Events) {
    match outcome {
        Ok(stats) => {
            metrics::counter!(FRAMES, "hop" => "worker", "result" => "ok").increment(1);
            if stats.rms_dbfs.is_finite() {
                metrics::histogram!(FRAME_LEVEL).record(stats.rms_dbfs);
            }
            for event in events.iter() {
                metrics::counter!(QUALITY_EVENTS, "kind" => event.as_str()).increment(1);
            }
        }
        Err(e) => {
            metrics::counter!(FRAMES, "hop" => "worker", "result" => e.kind()).increment(1);
        }
    }
}

pub(crate) fn frame_enqueued(depth: usize) {
    metrics::histogram!(STREAM_QUEUE).record(depth as f64);
}

pub(crate) fn backpressure(waited: Duration) {
    metrics::histogram!(BACKPRESSURE).record(waited.as_secs_f64());
}

pub(crate) fn request_finished(outcome: Outcome) {
    metrics::counter!(REQUESTS, "outcome" => outcome.as_str()).increment(1);
}

pub(crate) fn first_frame(after: Duration) {
    metrics::histogram!(TIME_TO_FIRST_AUDIO).record(after.as_secs_f64());
}

/// Counts a request in flight until dropped.
pub(crate) struct InflightGuard;

impl InflightGuard {
    pub(crate) fn new() -> Self {
        let n = INFLIGHT_NOW.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(INFLIGHT).set(n as f64);
        Self
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let n = INFLIGHT_NOW.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(INFLIGHT).set(n as f64);
    }
}

/// Counts a clause being synthesised until dropped.
pub(crate) struct SynthesisGuard;

impl SynthesisGuard {
    pub(crate) fn new() -> Self {
        let n = SYNTHESES_NOW.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(CONCURRENT_SYNTHESES).set(n as f64);
        Self
    }
}

impl Drop for SynthesisGuard {
    fn drop(&mut self) {
        let n = SYNTHESES_NOW.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(CONCURRENT_SYNTHESES).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_the_admission_limit_less_what_is_admitted_in_audio_seconds() {
        // Two threads at 0.25 compute seconds per audio second: eight
        // seconds of audio per second; at a 0.75 limit, six.
        assert_eq!(realtime(0.0, 0.75, 2, 0.25), (6.0, 6.0));
        assert_eq!(realtime(0.5, 0.75, 2, 0.25), (6.0, 2.0));
        assert_eq!(realtime(0.9, 0.75, 2, 0.25), (6.0, 0.0));
        assert_eq!(realtime(0.0, 0.75, 2, 0.0), (0.0, 0.0));
    }

    #[test]
    fn every_metric_is_described_once_under_the_workers_prefix() {
        let mut names: Vec<&str> = HELP.iter().map(|h| h.name).collect();
        names.sort_unstable();
        let described = names.len();
        names.dedup();
        assert_eq!(names.len(), described, "a metric described twice");
        for name in names {
            assert!(name.starts_with("tts_worker_"), "{name}");
        }
    }
}
