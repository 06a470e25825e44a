//! Every metric the orchestrator records, by name, in one place (listed with
//! units and labels in `docs/metrics.md`), and the process-wide counters the
//! relay keeps for `/health` and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Unit;
use tts_frame::{Encoding, Events, FrameError, QualityEvent, QualityStats};
use tts_protocol::{ErrorCode, Outcome};

/// Open WebSocket connections.
pub const CONNECTIONS: &str = "tts_orchestrator_websocket_connections";
/// WebSocket connections accepted since start.
pub const CONNECTIONS_TOTAL: &str = "tts_orchestrator_websocket_connections_total";
/// Requests by `outcome` (completed, cancelled, disconnected,
/// client_error, refused, failed) and `code` (an error code, or `none`).
pub const REQUESTS: &str = "tts_orchestrator_requests_total";
/// Client connections refused or closed by the server, by `reason`:
/// before a session (capacity, per_address, handshake_timeout, tls, auth,
/// origin), an HTTP body refused (body_too_large, body_timeout,
/// body_unreadable), or a socket that stopped taking bytes
/// (write_timeout).
pub const CONNECTIONS_REFUSED: &str = "tts_orchestrator_connections_refused_total";
/// WebSocket sessions the server closed, by close `code` (1000 idle, 1001
/// shutdown, 1007 invalid UTF-8, 1008 policy, 1009 too big).
pub const SERVER_CLOSES: &str = "tts_orchestrator_server_closes_total";
/// Messages for a client dropped because it was not reading, by `kind`
/// (control: a pong; last: a request's `end` or `error`; close: the last
/// messages of a closing connection).
pub const MESSAGES_DROPPED: &str = "tts_orchestrator_messages_dropped_total";
/// Requests in flight.
pub const INFLIGHT: &str = "tts_orchestrator_inflight_requests";
/// Frames by `hop` (worker_to_orchestrator, orchestrator_to_client) and
/// `result` (ok, bad_size, out_of_sequence, checksum_mismatch, dropped).
pub const FRAMES: &str = "tts_orchestrator_frames_total";
/// Audio payload bytes encoded for clients, by `encoding` (pcm_s16le,
/// mulaw, opus) and `api` (websocket, http).
pub const PAYLOAD_BYTES: &str = "tts_orchestrator_payload_bytes_total";
/// Quality events in streams from the worker, by `kind` (clipping,
/// dc_offset, dead_air, leading_silence).
pub const QUALITY_EVENTS: &str = "tts_orchestrator_frame_quality_events_total";
/// Frame RMS level, dBFS.
pub const FRAME_LEVEL: &str = "tts_orchestrator_frame_level_dbfs";
/// Seconds from `synthesize` received to first frame sent.
pub const TIME_TO_FIRST_AUDIO: &str = "tts_orchestrator_time_to_first_audio_seconds";
/// Seconds from the `append` that completed a context's first clause to
/// its first frame sent.
pub const CONTEXT_FIRST_AUDIO: &str = "tts_orchestrator_context_first_audio_seconds";
/// Seconds from the worker's stamp to the orchestrator's receipt.
pub const WORKER_HOP_LATENCY: &str = "tts_orchestrator_worker_hop_latency_seconds";
/// Seconds from the orchestrator's receipt of a frame to its send.
pub const RELAY_LATENCY: &str = "tts_orchestrator_relay_latency_seconds";
/// Seconds between consecutive frames of a stream at send.
pub const FRAME_GAP: &str = "tts_orchestrator_frame_gap_seconds";
/// Frames waiting in a connection's queue, sampled on enqueue.
pub const QUEUE_DEPTH: &str = "tts_orchestrator_client_queue_frames";
/// Seconds a relay waited for room in a full connection queue, per wait.
pub const BACKPRESSURE: &str = "tts_orchestrator_backpressure_wait_seconds";
/// Always 1, labelled with `version`.
pub const BUILD_INFO: &str = "tts_orchestrator_build_info";
/// 1 while the worker answers its gRPC health check with SERVING, else 0
/// (checked every 2 s).
pub const WORKER_SERVING: &str = "tts_orchestrator_worker_serving";
/// Each worker's circuit breaker, by `worker` (its URL): 0 closed, 1
/// half-open (a probe may go), 2 open.
pub const WORKER_BREAKER: &str = "tts_orchestrator_worker_breaker_state";
/// Each worker's last reported load, by `worker`: the share of its
/// synthesis threads its admitted streams need.
pub const WORKER_UTILISATION: &str = "tts_orchestrator_worker_utilisation";
/// Workers that answered their last load poll as serving.
pub const WORKERS_SERVING: &str = "tts_orchestrator_workers_serving";
/// Requests sent to another worker after the first failed before its first
/// frame, by `reason` (worker_unavailable, overloaded).
pub const RETRIES: &str = "tts_orchestrator_worker_retries_total";
/// Workers added and removed from the registry, by `event` (added;
/// expired: its entry ran out or was deleted; refused: a URL no
/// `--registry-allow` pattern matches, counted once per URL).
pub const REGISTRY_EVENTS: &str = "tts_orchestrator_registry_events_total";
/// Phrase cache lookups, by `result` (hit, miss, error: Redis slow or
/// away, or an entry that does not decode; corrupt: an entry whose frames
/// fail their checksums, deleted).
pub const PHRASE_CACHE_LOOKUPS: &str = "tts_orchestrator_phrase_cache_lookups_total";
/// Completed requests offered to the phrase cache, by `result` (stored,
/// too_big, error).
pub const PHRASE_CACHE_STORES: &str = "tts_orchestrator_phrase_cache_stores_total";
/// Entries evicted to keep the cache within its byte bound.
pub const PHRASE_CACHE_EVICTIONS: &str = "tts_orchestrator_phrase_cache_evictions_total";
/// Bytes of cached audio after the last store.
pub const PHRASE_CACHE_BYTES: &str = "tts_orchestrator_phrase_cache_bytes";
/// 1 while the orchestrator takes requests (the worker serving, not
/// draining), else 0 (checked every 2 s).
pub const READY: &str = "tts_orchestrator_ready";

/// Counters the relay keeps in-process: exact, cheap to read, and what
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
        metrics::counter!(CONNECTIONS_TOTAL).increment(1);
    }

    pub(crate) fn connection_closed(&self) {
        let n = self.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(CONNECTIONS).set(n as f64);
    }
}

/// One metric's description: what promtool and dashboards show.
#[derive(Debug, Clone, Copy)]
struct Description {
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    help: &'static str,
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

const fn counter(name: &'static str, help: &'static str) -> Description {
    Description {
        name,
        kind: Kind::Counter,
        unit: None,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Description {
    Description {
        kind: Kind::Gauge,
        ..counter(name, help)
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Description {
    Description {
        kind: Kind::Histogram,
        ..counter(name, help)
    }
}

impl Description {
    const fn in_unit(self, unit: Unit) -> Self {
        Self {
            unit: Some(unit),
            ..self
        }
    }
}

/// Every metric, described.
const DESCRIPTIONS: &[Description] = &[
    gauge(CONNECTIONS, "Open WebSocket connections."),
    counter(CONNECTIONS_TOTAL, "WebSocket connections accepted."),
    counter(REQUESTS, "Requests by outcome and error code."),
    counter(
        CONNECTIONS_REFUSED,
        "Client connections refused or closed by the server, by reason.",
    ),
    counter(
        SERVER_CLOSES,
        "WebSocket sessions the server closed, by close code.",
    ),
    counter(
        MESSAGES_DROPPED,
        "Messages for a client dropped because it was not reading, by kind.",
    ),
    gauge(INFLIGHT, "Requests in flight."),
    counter(FRAMES, "Frames by hop and validation result."),
    counter(
        QUALITY_EVENTS,
        "Quality events in streams from the worker, by kind.",
    ),
    counter(
        PAYLOAD_BYTES,
        "Audio payload bytes encoded for clients, by encoding and API.",
    )
    .in_unit(Unit::Bytes),
    histogram(FRAME_LEVEL, "RMS level of frames from the worker, dBFS."),
    histogram(
        TIME_TO_FIRST_AUDIO,
        "Synthesize received to first frame sent.",
    )
    .in_unit(Unit::Seconds),
    histogram(
        CONTEXT_FIRST_AUDIO,
        "Append that completed a context's first clause to its first frame sent.",
    )
    .in_unit(Unit::Seconds),
    histogram(
        WORKER_HOP_LATENCY,
        "Worker frame stamp to orchestrator receipt.",
    )
    .in_unit(Unit::Seconds),
    histogram(
        RELAY_LATENCY,
        "Orchestrator receipt of a frame to its send.",
    )
    .in_unit(Unit::Seconds),
    histogram(
        FRAME_GAP,
        "Time between consecutive frames of a stream at send.",
    )
    .in_unit(Unit::Seconds),
    histogram(
        QUEUE_DEPTH,
        "Frames queued for a connection, sampled on enqueue.",
    ),
    histogram(BACKPRESSURE, "Waits for room in a full connection queue.").in_unit(Unit::Seconds),
    gauge(BUILD_INFO, "Build information; always 1."),
    gauge(
        WORKER_SERVING,
        "1 while the worker answers its health check with SERVING.",
    ),
    gauge(READY, "1 while the orchestrator takes requests."),
    gauge(
        WORKER_BREAKER,
        "Worker circuit breaker: 0 closed, 1 half-open, 2 open.",
    ),
    gauge(
        WORKER_UTILISATION,
        "Worker's reported share of its synthesis threads in use.",
    ),
    gauge(WORKERS_SERVING, "Workers answering as serving."),
    counter(PHRASE_CACHE_LOOKUPS, "Phrase cache lookups by result."),
    counter(PHRASE_CACHE_STORES, "Phrase cache stores by result."),
    counter(
        PHRASE_CACHE_EVICTIONS,
        "Phrase cache entries evicted for the byte bound.",
    ),
    gauge(
        PHRASE_CACHE_BYTES,
        "Bytes of cached audio after the last store.",
    )
    .in_unit(Unit::Bytes),
    counter(
        RETRIES,
        "Requests retried on another worker before their first frame, by reason.",
    ),
    counter(
        REGISTRY_EVENTS,
        "Workers added to, expired from or refused by the registry.",
    ),
];

/// Registers the help text of every metric (promtool requires it).
pub(crate) fn describe() {
    for &Description {
        name,
        kind,
        unit,
        help,
    } in DESCRIPTIONS
    {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// Close codes the server sends.
const CLOSE_CODES: [u16; 5] = [1000, 1001, 1007, 1008, 1009];

/// Gauges that start at 0.
const GAUGES_AT_ZERO: [&str; 6] = [
    CONNECTIONS,
    INFLIGHT,
    WORKER_SERVING,
    READY,
    WORKERS_SERVING,
    PHRASE_CACHE_BYTES,
];

/// Counters with one label: each value's series starts at 0.
const LABELLED_COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        PHRASE_CACHE_LOOKUPS,
        "result",
        &["hit", "miss", "error", "corrupt"],
    ),
    (
        PHRASE_CACHE_STORES,
        "result",
        &["stored", "too_big", "error"],
    ),
    (RETRIES, "reason", &["worker_unavailable", "overloaded"]),
    (REGISTRY_EVENTS, "event", &["added", "expired", "refused"]),
    (
        CONNECTIONS_REFUSED,
        "reason",
        &[
            "capacity",
            "per_address",
            "handshake_timeout",
            "tls",
            "auth",
            "origin",
            "body_too_large",
            "body_timeout",
            "body_unreadable",
            "write_timeout",
        ],
    ),
    (MESSAGES_DROPPED, "kind", &["control", "last", "close"]),
];

/// Registers every metric and creates every known series at 0, so that
/// dashboards and alerts see a zero before the first incident.
pub(crate) fn started() {
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for name in GAUGES_AT_ZERO {
        metrics::gauge!(name).set(0.0);
    }
    for name in [CONNECTIONS_TOTAL, PHRASE_CACHE_EVICTIONS] {
        metrics::counter!(name).absolute(0);
    }
    for &(name, label, values) in LABELLED_COUNTERS {
        for &value in values {
            metrics::counter!(name, label => value).absolute(0);
        }
    }
    for code in CLOSE_CODES {
        metrics::counter!(SERVER_CLOSES, "code" => code.to_string()).absolute(0);
    }
    for event in QualityEvent::ALL {
        metrics::counter!(QUALITY_EVENTS, "kind" => event.as_str()).absolute(0);
    }
    requests_at_zero();
    frames_at_zero();
}

/// Every outcome of a request, with every code it can carry, at 0.
fn requests_at_zero() {
    for outcome in [
        Outcome::Completed,
        Outcome::Cancelled,
        Outcome::Disconnected,
    ] {
        metrics::counter!(REQUESTS, "outcome" => outcome.as_str(), "code" => "none").absolute(0);
    }
    for code in ErrorCode::ALL {
        metrics::counter!(REQUESTS, "outcome" => code.outcome().as_str(), "code" => code.as_str())
            .absolute(0);
    }
}

/// Every hop and result of a frame, and every encoding and API of the
/// payload bytes, at 0.
fn frames_at_zero() {
    for hop in ["worker_to_orchestrator", "phrase_cache_to_orchestrator"] {
        for result in ["ok", "bad_size", "out_of_sequence", "checksum_mismatch"] {
            metrics::counter!(FRAMES, "hop" => hop, "result" => result).absolute(0);
        }
    }
    for result in ["ok", "dropped"] {
        metrics::counter!(FRAMES, "hop" => "orchestrator_to_client", "result" => result)
            .absolute(0);
    }
    for encoding in Encoding::ALL {
        for api in ["websocket", "http"] {
            metrics::counter!(PAYLOAD_BYTES, "encoding" => encoding.as_str(), "api" => api)
                .absolute(0);
        }
    }
}

/// A frame's payload was encoded for a client of `api`.
pub(crate) fn payload_sent(encoding: Encoding, api: &'static str, bytes: usize) {
    metrics::counter!(PAYLOAD_BYTES, "encoding" => encoding.as_str(), "api" => api)
        .increment(bytes as u64);
}

pub(crate) fn connection_refused(reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

pub(crate) fn connection_closed_by_server(code: u16) {
    metrics::counter!(SERVER_CLOSES, "code" => code.to_string()).increment(1);
}

pub(crate) fn messages_dropped(kind: &'static str) {
    metrics::counter!(MESSAGES_DROPPED, "kind" => kind).increment(1);
}

pub(crate) fn close_unflushed() {
    messages_dropped("close");
}

/// A frame checked on arrival: from a worker (with its hop latency) or
/// replayed from the phrase cache (`hop_latency` `None`).
pub(crate) fn frame_received(
    outcome: &Result<QualityStats, FrameError>,
    hop_latency: Option<Duration>,
    events: Events,
) {
    let hop = match hop_latency {
        Some(latency) => {
            metrics::histogram!(WORKER_HOP_LATENCY).record(latency.as_secs_f64());
            "worker_to_orchestrator"
        }
        None => "phrase_cache_to_orchestrator",
    };
    match outcome {
        Ok(stats) => {
            metrics::counter!(FRAMES, "hop" => hop, "result" => "ok").increment(1);
            if stats.rms_dbfs.is_finite() {
                metrics::histogram!(FRAME_LEVEL).record(stats.rms_dbfs);
            }
            for event in events.iter() {
                metrics::counter!(QUALITY_EVENTS, "kind" => event.as_str()).increment(1);
            }
        }
        Err(e) => {
            metrics::counter!(FRAMES, "hop" => hop, "result" => e.kind()).increment(1);
        }
    }
}

pub(crate) fn frame_sent(relay: Duration, gap: Option<Duration>) {
    metrics::counter!(FRAMES, "hop" => "orchestrator_to_client", "result" => "ok").increment(1);
    metrics::histogram!(RELAY_LATENCY).record(relay.as_secs_f64());
    if let Some(gap) = gap {
        metrics::histogram!(FRAME_GAP).record(gap.as_secs_f64());
    }
}

pub(crate) fn frames_dropped(n: u64) {
    metrics::counter!(FRAMES, "hop" => "orchestrator_to_client", "result" => "dropped")
        .increment(n);
}

pub(crate) fn backpressure(waited: Duration) {
    metrics::histogram!(BACKPRESSURE).record(waited.as_secs_f64());
}

pub(crate) fn context_first_audio(after: Duration) {
    metrics::histogram!(CONTEXT_FIRST_AUDIO).record(after.as_secs_f64());
}

pub(crate) fn first_audio(after: Duration) {
    metrics::histogram!(TIME_TO_FIRST_AUDIO).record(after.as_secs_f64());
}

pub(crate) fn request_finished(outcome: Outcome, code: Option<ErrorCode>) {
    let code = code.map_or("none", ErrorCode::as_str);
    metrics::counter!(REQUESTS, "outcome" => outcome.as_str(), "code" => code).increment(1);
}

pub(crate) fn inflight(n: usize) {
    metrics::gauge!(INFLIGHT).set(n as f64);
}

/// What the state watcher found.
pub(crate) fn state(worker_serving: bool, ready: bool) {
    metrics::gauge!(WORKER_SERVING).set(f64::from(u8::from(worker_serving)));
    metrics::gauge!(READY).set(f64::from(u8::from(ready)));
}

/// A worker joined the pool: its series start at 0.
pub(crate) fn worker_added(url: &str) {
    metrics::gauge!(WORKER_BREAKER, "worker" => url.to_owned()).set(0.0);
    metrics::gauge!(WORKER_UTILISATION, "worker" => url.to_owned()).set(0.0);
}

/// A registry worker's entry expired.
pub(crate) fn worker_removed(url: &str) {
    // Its gauges would otherwise freeze at their last value.
    metrics::gauge!(WORKER_BREAKER, "worker" => url.to_owned()).set(0.0);
    metrics::gauge!(WORKER_UTILISATION, "worker" => url.to_owned()).set(0.0);
    metrics::counter!(REGISTRY_EVENTS, "event" => "expired").increment(1);
}

/// A registry entry was refused: its URL is not allowed.
pub(crate) fn registry_refused() {
    metrics::counter!(REGISTRY_EVENTS, "event" => "refused").increment(1);
}

/// A worker from the registry was added.
pub(crate) fn registry_added() {
    metrics::counter!(REGISTRY_EVENTS, "event" => "added").increment(1);
}

/// A worker's breaker changed: `state` 0 closed, 1 half-open, 2 open.
pub(crate) fn worker_breaker(url: &str, state: f64) {
    metrics::gauge!(WORKER_BREAKER, "worker" => url.to_owned()).set(state);
}

pub(crate) fn worker_load(url: &str, utilisation: f64) {
    metrics::gauge!(WORKER_UTILISATION, "worker" => url.to_owned()).set(utilisation);
}

pub(crate) fn workers_serving(n: usize) {
    metrics::gauge!(WORKERS_SERVING).set(n as f64);
}

pub(crate) fn retried(reason: &'static str) {
    metrics::counter!(RETRIES, "reason" => reason).increment(1);
}

pub(crate) fn phrase_cache_lookup(result: &'static str) {
    metrics::counter!(PHRASE_CACHE_LOOKUPS, "result" => result).increment(1);
}

pub(crate) fn phrase_cache_stored(result: &'static str) {
    metrics::counter!(PHRASE_CACHE_STORES, "result" => result).increment(1);
}

pub(crate) fn phrase_cache_evicted() {
    metrics::counter!(PHRASE_CACHE_EVICTIONS).increment(1);
}

pub(crate) fn phrase_cache_bytes(bytes: u64) {
    metrics::gauge!(PHRASE_CACHE_BYTES).set(bytes as f64);
}
