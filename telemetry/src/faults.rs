//! Built-in fault injection, for chaos experiments on a running pipeline
//! (the runbooks' chaos section, after Envoy's fault filter).
//!
//! Off unless the process starts with `--allow-fault-injection` and an
//! `--admin-token`; then `POST /faults` on its admin (orchestrator) or
//! metrics (worker) listener switches on one fault for a bounded time:
//!
//! | kind | applied by | what it does |
//! |---|---|---|
//! | `link_latency` | orchestrator | frames from workers wait `latency_ms` ± `jitter_ms` (a delay line: a steady delay, not a cumulative one); deep pings wait twice that (a round trip) |
//! | `corrupt_frames` | worker | a payload byte of every `every`-th frame is flipped after its checksum |
//! | `drop_frames` | worker | every `every`-th frame is not sent (the next hop sees a gap) |
//! | `slowdown` | worker | each synthesis step takes `factor` times its compute time, the rest spent waiting (as when another process takes the CPU) |
//! | `stall` | worker | synthesis threads stop making progress while they hold their work |
//! | `clipping` | worker | `len_ms` from `from_ms` into each new request amplified 16×, flat against full scale |
//! | `dc_offset` | worker | `offset` added to every sample of each new request |
//! | `dead_air` | worker | `len_ms` of silence from `from_ms` into each new request |
//!
//! Every active fault shows in a gauge present from start-up
//! (`tts_worker_fault_injection_active{kind}`,
//! `tts_orchestrator_fault_injection_active{kind}`), in the orchestrator's
//! `/ready` (`fault_injection`), and in a log line when it starts and
//! ends, so that nobody mistakes an experiment for an incident.
//!
//! The checks on the hot path cost one relaxed atomic load while no fault
//! is active.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The longest a fault may last, seconds: an experiment that is forgotten
/// still ends.
pub const MAX_DURATION_SECS: f64 = 3600.0;

/// One fault and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Frames from the worker wait this long at the orchestrator (one
    /// way), plus or minus up to `jitter_ms`; deep pings wait twice that.
    LinkLatency {
        /// Added delay, ms (1–10,000).
        #[serde(default = "defaults::latency_ms")]
        latency_ms: u32,
        /// Uniform jitter around it, ms (0–10,000).
        #[serde(default)]
        jitter_ms: u32,
    },
    /// A payload byte of every `every`-th frame of each request is flipped
    /// after its checksum was computed.
    CorruptFrames {
        /// 1 corrupts every frame.
        #[serde(default = "defaults::every")]
        every: u32,
    },
    /// Every `every`-th frame of each request is not sent.
    DropFrames {
        /// 1 would drop every frame after the first.
        #[serde(default = "defaults::every")]
        every: u32,
    },
    /// Each synthesis step takes `factor` times its compute time.
    Slowdown {
        /// 1–100.
        #[serde(default = "defaults::factor")]
        factor: f64,
    },
    /// Synthesis threads make no progress while they hold work.
    Stall,
    /// A burst of clipping in each new request's audio.
    Clipping {
        /// Start, ms into the request's audio.
        #[serde(default = "defaults::from_ms")]
        from_ms: u32,
        /// Length, ms (1–60,000).
        #[serde(default = "defaults::clip_ms")]
        len_ms: u32,
    },
    /// A constant added to each new request's samples.
    DcOffset {
        /// The offset, in sample units (non-zero).
        #[serde(default = "defaults::offset")]
        offset: i16,
    },
    /// A stretch of silence in each new request's audio.
    DeadAir {
        /// Start, ms into the request's audio.
        #[serde(default = "defaults::from_ms")]
        from_ms: u32,
        /// Length, ms (1–60,000).
        #[serde(default = "defaults::dead_air_ms")]
        len_ms: u32,
    },
}

/// Parameter defaults, so that `{"kind": "stall"}`-style requests work
/// for every kind.
mod defaults {
    pub(super) fn latency_ms() -> u32 {
        150
    }
    pub(super) fn every() -> u32 {
        25
    }
    pub(super) fn factor() -> f64 {
        4.0
    }
    pub(super) fn from_ms() -> u32 {
        300
    }
    pub(super) fn clip_ms() -> u32 {
        200
    }
    pub(super) fn dead_air_ms() -> u32 {
        800
    }
    pub(super) fn offset() -> i16 {
        2000
    }
}

/// Which process applies a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// `tts-orchestrator`.
    Orchestrator,
    /// `tts-worker`.
    Worker,
}

impl Component {
    /// The name used in metric names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orchestrator => "orchestrator",
            Self::Worker => "worker",
        }
    }

    /// The kinds this component applies.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Orchestrator => &["link_latency"],
            Self::Worker => &[
                "corrupt_frames",
                "drop_frames",
                "slowdown",
                "stall",
                "clipping",
                "dc_offset",
                "dead_air",
            ],
        }
    }

    fn gauge(self) -> &'static str {
        match self {
            Self::Orchestrator => "tts_orchestrator_fault_injection_active",
            Self::Worker => "tts_worker_fault_injection_active",
        }
    }
}

/// Every kind, as the API spells it.
pub const KINDS: [&str; 8] = [
    "link_latency",
    "corrupt_frames",
    "drop_frames",
    "slowdown",
    "stall",
    "clipping",
    "dc_offset",
    "dead_air",
];

impl Fault {
    /// Its kind, as the API spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LinkLatency { .. } => "link_latency",
            Self::CorruptFrames { .. } => "corrupt_frames",
            Self::DropFrames { .. } => "drop_frames",
            Self::Slowdown { .. } => "slowdown",
            Self::Stall => "stall",
            Self::Clipping { .. } => "clipping",
            Self::DcOffset { .. } => "dc_offset",
            Self::DeadAir { .. } => "dead_air",
        }
    }

    /// The process that applies it.
    pub fn component(&self) -> Component {
        match self {
            Self::LinkLatency { .. } => Component::Orchestrator,
            _ => Component::Worker,
        }
    }

    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), FaultError> {
        let bad = |what: &str| Err(FaultError::Invalid(what.to_owned()));
        match *self {
            Self::LinkLatency {
                latency_ms,
                jitter_ms,
            } => {
                if !(1..=10_000).contains(&latency_ms) {
                    return bad("latency_ms must be between 1 and 10000");
                }
                if jitter_ms > 10_000 {
                    return bad("jitter_ms must be at most 10000");
                }
            }
            Self::CorruptFrames { every } | Self::DropFrames { every } if every == 0 => {
                return bad("every must be at least 1");
            }
            Self::Slowdown { factor } if !(1.0..=100.0).contains(&factor) => {
                return bad("factor must be between 1 and 100");
            }
            Self::Clipping { len_ms, .. } | Self::DeadAir { len_ms, .. }
                if !(1..=60_000).contains(&len_ms) =>
            {
                return bad("len_ms must be between 1 and 60000");
            }
            Self::DcOffset { offset: 0 } => return bad("offset must not be 0"),
            _ => {}
        }
        Ok(())
    }
}

/// What `POST /faults` takes: a fault and how long it lasts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct FaultRequest {
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
    /// How long it lasts, seconds (above 0, at most an hour).
    pub duration_s: f64,
}

/// One active fault, as `GET /faults` and `/ready` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveFault {
    /// Identifies this activation.
    pub id: u64,
    /// The process that applies it (`orchestrator`, `worker`).
    pub component: String,
    /// The fault and its parameters.
    #[serde(flatten)]
    pub fault: Fault,
    /// When it started, RFC 3339.
    pub started: String,
    /// Seconds left.
    pub remaining_s: f64,
}

/// Why a fault was not started.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The process was started without `--allow-fault-injection`.
    #[error("fault injection is off: start the process with --allow-fault-injection")]
    Disabled,
    /// No or the wrong bearer token.
    #[error("fault injection needs `authorization: Bearer <the --admin-token>`")]
    Unauthorized,
    /// Another process applies this kind.
    #[error("{kind} is applied by the {applies}, not this {here}: send it there")]
    Elsewhere {
        /// The kind asked for.
        kind: &'static str,
        /// Where it is applied.
        applies: &'static str,
        /// This process.
        here: String,
    },
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl FaultError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Elsewhere { .. } | Self::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Debug)]
struct Active {
    id: u64,
    fault: Fault,
    started: SystemTime,
    until: Instant,
}

/// A process's faults: which it may apply, and which are active.
#[derive(Debug)]
pub struct Faults {
    components: Vec<Component>,
    enabled: bool,
    token: Option<String>,
    any: AtomicBool,
    active: Mutex<Vec<Active>>,
    next_id: AtomicU64,
    /// Draws for jitter (a counter run through a hash).
    draws: AtomicU64,
}

impl Faults {
    /// Faults applied by `components`; `enabled` with `token` accepts
    /// `POST /faults`, otherwise every start is refused.
    pub fn new(components: &[Component], enabled: bool, token: Option<String>) -> Arc<Self> {
        let faults = Arc::new(Self {
            components: components.to_vec(),
            enabled: enabled && token.is_some(),
            token,
            any: AtomicBool::new(false),
            active: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            draws: AtomicU64::new(0),
        });
        if faults.enabled {
            spawn_expiry(Arc::downgrade(&faults));
        }
        faults
    }

    /// Faults that can never be started (the default).
    pub fn disabled(components: &[Component]) -> Arc<Self> {
        Self::new(components, false, None)
    }

    /// Whether starting faults is allowed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Creates the gauge of every kind this process applies, at 0 (call
    /// once the metrics recorder is installed).
    pub fn describe(&self) {
        for component in &self.components {
            metrics::describe_gauge!(
                component.gauge(),
                "1 while a fault of this kind is injected (an experiment, not an incident)"
            );
            for kind in component.kinds() {
                metrics::gauge!(component.gauge(), "kind" => *kind).set(0.0);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the token (constant time) against the admin token.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<(), FaultError> {
        use subtle::ConstantTimeEq;
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        match (&self.token, bearer) {
            (Some(token), Some(given)) if bool::from(token.as_bytes().ct_eq(given.as_bytes())) => {
                Ok(())
            }
            _ => Err(FaultError::Unauthorized),
        }
    }

    /// Starts `fault` for `duration` (replacing an active fault of the
    /// same kind).
    pub fn start(&self, fault: Fault, duration: Duration) -> Result<ActiveFault, FaultError> {
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        let component = fault.component();
        if !self.components.contains(&component) {
            return Err(FaultError::Elsewhere {
                kind: fault.kind(),
                applies: component.as_str(),
                here: self.here(),
            });
        }
        fault.validate()?;
        let secs = duration.as_secs_f64();
        if !(secs > 0.0 && secs <= MAX_DURATION_SECS) {
            return Err(FaultError::Invalid(format!(
                "duration_s must be above 0 and at most {MAX_DURATION_SECS}"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut active = self.lock();
        active.retain(|a| a.fault.kind() != fault.kind());
        active.push(Active {
            id,
            fault,
            started: SystemTime::now(),
            until: Instant::now() + duration,
        });
        self.any.store(true, Ordering::Release);
        metrics::gauge!(component.gauge(), "kind" => fault.kind()).set(1.0);
        warn!(fault_id = id, kind = fault.kind(), params = %params(&fault), duration_s = secs,
            "fault injection started: this is an experiment, not an incident");
        let view = active
            .last()
            .map(|a| view(a, Instant::now()))
            .ok_or_else(|| FaultError::Invalid("lost".into()))?;
        Ok(view)
    }

    /// Ends the active faults of `kind`, or all of them; returns how many.
    pub fn stop(&self, kind: Option<&str>) -> usize {
        self.expire();
        let mut active = self.lock();
        let before = active.len();
        active.retain(|a| {
            let ends = kind.is_none_or(|k| a.fault.kind() == k);
            if ends {
                ended(a, "stopped");
            }
            !ends
        });
        self.any.store(!active.is_empty(), Ordering::Release);
        before - active.len()
    }

    /// Ends the faults whose time is up.
    pub fn expire(&self) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut active = self.lock();
        active.retain(|a| {
            let ends = a.until <= now;
            if ends {
                ended(a, "expired");
            }
            !ends
        });
        self.any.store(!active.is_empty(), Ordering::Release);
    }

    /// The active faults.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.expire();
        let now = Instant::now();
        self.lock().iter().map(|a| view(a, now)).collect()
    }

    /// The active fault of `kind`, if any: one atomic load when none is.
    pub fn current(&self, kind: &str) -> Option<Fault> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        self.lock()
            .iter()
            .find(|a| a.fault.kind() == kind && a.until > now)
            .map(|a| a.fault)
    }

    /// With `link_latency` active: this frame's delay (latency ± jitter).
    pub fn link_delay(&self) -> Option<Duration> {
        let Fault::LinkLatency {
            latency_ms,
            jitter_ms,
        } = self.current("link_latency")?
        else {
            return None;
        };
        let jitter = i64::from(jitter_ms);
        let offset = if jitter > 0 {
            (self.draw() % (2 * jitter as u64 + 1)) as i64 - jitter
        } else {
            0
        };
        let ms = (i64::from(latency_ms) + offset).max(0);
        Some(Duration::from_millis(ms as u64))
    }

    /// Whether frame `sequence` is to be corrupted.
    pub fn corrupts(&self, sequence: u32) -> bool {
        matches!(self.current("corrupt_frames"),
            Some(Fault::CorruptFrames { every }) if (sequence + 1).is_multiple_of(every.max(1)))
    }

    /// Whether frame `sequence` is to be dropped (never the first).
    pub fn drops(&self, sequence: u32) -> bool {
        matches!(self.current("drop_frames"),
            Some(Fault::DropFrames { every }) if sequence > 0 && (sequence + 1).is_multiple_of(every.max(1)))
    }

    /// The slowdown factor, with `slowdown` active.
    pub fn slowdown(&self) -> Option<f64> {
        match self.current("slowdown")? {
            Fault::Slowdown { factor } => Some(factor),
            _ => None,
        }
    }

    /// Whether synthesis is to stall.
    pub fn stalled(&self) -> bool {
        self.current("stall").is_some()
    }

    /// The audio fault for a new request, if one is active.
    pub fn audio(&self) -> Option<Fault> {
        ["clipping", "dc_offset", "dead_air"]
            .into_iter()
            .find_map(|k| self.current(k))
    }

    fn here(&self) -> String {
        self.components
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    fn draw(&self) -> u64 {
        use std::hash::{BuildHasher, RandomState};
        static SEED: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        SEED.get_or_init(RandomState::new).hash_one(n)
    }
}

fn params(fault: &Fault) -> String {
    match serde_json::to_value(fault) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("kind");
            serde_json::Value::Object(map).to_string()
        }
        _ => String::new(),
    }
}

fn ended(a: &Active, how: &'static str) {
    let component = a.fault.component();
    metrics::gauge!(component.gauge(), "kind" => a.fault.kind()).set(0.0);
    info!(
        fault_id = a.id,
        kind = a.fault.kind(),
        how,
        "fault injection ended"
    );
}

fn view(a: &Active, now: Instant) -> ActiveFault {
    ActiveFault {
        id: a.id,
        component: a.fault.component().as_str().to_owned(),
        fault: a.fault,
        started: humantime::format_rfc3339_millis(a.started).to_string(),
        remaining_s: (a.until.saturating_duration_since(now).as_secs_f64() * 10.0).round() / 10.0,
    }
}

/// Ends expired faults every 250 ms (so that the gauge and the log say so
/// promptly) for as long as the registry lives.
fn spawn_expiry(faults: Weak<Faults>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match faults.upgrade() {
                Some(f) => f.expire(),
                None => return,
            }
        }
    });
}

/// `GET /faults` (open), `POST /faults` and `DELETE /faults[?kind=K]`
/// (both need the admin token).
pub fn routes(faults: Arc<Faults>) -> axum::Router {
    axum::Router::new()
        .route("/faults", get(list).post(start).delete(stop))
        .with_state(faults)
}

#[derive(Serialize)]
struct Listing {
    enabled: bool,
    kinds: Vec<&'static str>,
    active: Vec<ActiveFault>,
}

async fn list(State(faults): State<Arc<Faults>>) -> Json<Listing> {
    Json(Listing {
        enabled: faults.enabled(),
        kinds: faults
            .components
            .iter()
            .flat_map(|c| c.kinds().iter().copied())
            .collect(),
        active: faults.list(),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn refusal(e: &FaultError) -> Response {
    (
        e.status(),
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn start(
    State(faults): State<Arc<Faults>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = faults.authorize(bearer(&headers)) {
        return refusal(&e);
    }
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(&FaultError::Invalid(format!(
                "expected {{\"kind\": one of {KINDS:?}, parameters…, \"duration_s\": seconds}}: {e}"
            )));
        }
    };
    let duration = Duration::try_from_secs_f64(request.duration_s).unwrap_or(Duration::ZERO);
    match faults.start(request.fault, duration) {
        Ok(active) => (StatusCode::CREATED, Json(active)).into_response(),
        Err(e) => refusal(&e),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    kind: Option<String>,
}

async fn stop(
    State(faults): State<Arc<Faults>>,
    headers: HeaderMap,
    Query(query): Query<StopQuery>,
) -> Response {
    if let Err(e) = faults.authorize(bearer(&headers)) {
        return refusal(&e);
    }
    let stopped = faults.stop(query.kind.as_deref());
    Json(serde_json::json!({ "stopped": stopped })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(components: &[Component]) -> Arc<Faults> {
        Faults::new(components, true, Some("secret".into()))
    }

    #[test]
    fn requests_parse_with_defaults_and_ranges_are_checked() {
        let r: FaultRequest =
            serde_json::from_str(r#"{"kind":"link_latency","latency_ms":80,"duration_s":5}"#)
                .expect("parses");
        assert_eq!(
            r.fault,
            Fault::LinkLatency {
                latency_ms: 80,
                jitter_ms: 0
            }
        );
        let stall: FaultRequest =
            serde_json::from_str(r#"{"kind":"stall","duration_s":1}"#).expect("parses");
        assert_eq!(stall.fault, Fault::Stall);
        let clip: FaultRequest =
            serde_json::from_str(r#"{"kind":"clipping","duration_s":1}"#).expect("parses");
        assert_eq!(
            clip.fault,
            Fault::Clipping {
                from_ms: 300,
                len_ms: 200
            }
        );
        assert!(
            serde_json::from_str::<FaultRequest>(r#"{"kind":"meteor","duration_s":1}"#).is_err()
        );
        assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"stall"}"#).is_err());
        for bad in [
            Fault::Slowdown { factor: 0.5 },
            Fault::CorruptFrames { every: 0 },
            Fault::DcOffset { offset: 0 },
            Fault::LinkLatency {
                latency_ms: 0,
                jitter_ms: 0,
            },
            Fault::DeadAir {
                from_ms: 0,
                len_ms: 0,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_fault_is_refused_unless_enabled_authorized_and_applied_here() {
        let off = Faults::disabled(&[Component::Worker]);
        assert!(matches!(
            off.start(Fault::Stall, Duration::from_secs(1)),
            Err(FaultError::Disabled)
        ));
        // Enabled without a token is not enabled.
        let no_token = Faults::new(&[Component::Worker], true, None);
        assert!(!no_token.enabled());
        let worker = enabled(&[Component::Worker]);
        assert!(matches!(
            worker.authorize(Some("wrong")),
            Err(FaultError::Unauthorized)
        ));
        assert!(matches!(
            worker.authorize(None),
            Err(FaultError::Unauthorized)
        ));
        assert!(worker.authorize(Some("secret")).is_ok());
        let latency = Fault::LinkLatency {
            latency_ms: 10,
            jitter_ms: 0,
        };
        let err = worker
            .start(latency, Duration::from_secs(1))
            .expect_err("not a worker fault");
        assert!(err.to_string().contains("orchestrator"), "{err}");
        assert!(matches!(
            worker.start(Fault::Stall, Duration::from_secs(7200)),
            Err(FaultError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn active_faults_apply_until_they_expire_or_stop() {
        let faults = enabled(&[Component::Worker, Component::Orchestrator]);
        assert!(!faults.stalled() && faults.slowdown().is_none() && faults.audio().is_none());
        faults
            .start(Fault::CorruptFrames { every: 3 }, Duration::from_secs(60))
            .expect("starts");
        assert_eq!(
            (0..9).filter(|&k| faults.corrupts(k)).collect::<Vec<_>>(),
            vec![2, 5, 8]
        );
        faults
            .start(Fault::DropFrames { every: 1 }, Duration::from_secs(60))
            .expect("starts");
        assert!(!faults.drops(0), "the first frame always goes");
        assert!(faults.drops(1));
        faults
            .start(
                Fault::LinkLatency {
                    latency_ms: 100,
                    jitter_ms: 20,
                },
                Duration::from_secs(60),
            )
            .expect("starts");
        for _ in 0..200 {
            let d = faults.link_delay().expect("active").as_millis();
            assert!((80..=120).contains(&d), "{d}");
        }
        faults
            .start(Fault::Stall, Duration::from_millis(150))
            .expect("starts");
        assert!(faults.stalled());
        assert_eq!(faults.list().len(), 4);
        // A second fault of a kind replaces the first.
        faults
            .start(Fault::CorruptFrames { every: 1 }, Duration::from_secs(60))
            .expect("starts");
        assert_eq!(faults.list().len(), 4);
        assert!(faults.corrupts(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!faults.stalled(), "expired");
        assert_eq!(faults.stop(Some("drop_frames")), 1);
        assert!(!faults.drops(1));
        assert_eq!(faults.stop(None), 2);
        assert!(faults.list().is_empty() && faults.link_delay().is_none());
    }
}
