//! The admin HTTP listener: `GET /health` (liveness), `GET /ready`
//! (readiness, with `?deep=1` adding a synthesis canary) and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tts_frame::{Tally, Validator};
use tts_proto::v1::tts_client::TtsClient;
use tts_telemetry::MetricsHandle;

use crate::config::OrchestratorConfig;
use crate::metrics::RelayStats;
use crate::pool::{Pool, Worker, WorkerStatus};
use crate::relay::grpc::canary_request;

/// The phrase the canary speaks.
pub(crate) const CANARY_TEXT: &str = "Canary check.";
/// Frames a good canary produces: "Canary check." is about one second.
const CANARY_FRAMES: std::ops::RangeInclusive<u64> = 15..=250;

/// What the admin routes read.
pub(crate) struct AdminState {
    pub(crate) pool: Arc<Pool>,
    pub(crate) config: OrchestratorConfig,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) metrics: Option<MetricsHandle>,
    pub(crate) canary: Mutex<Option<(Instant, Check)>>,
    /// Cancelled when shutdown begins: readiness turns 503.
    pub(crate) draining: tokio_util::sync::CancellationToken,
    /// The client listener's address, and whether it speaks TLS.
    pub(crate) ws_addr: std::net::SocketAddr,
    pub(crate) ws_tls: bool,
    /// Injected faults (chaos experiments), shown in `/ready`.
    pub(crate) faults: Arc<tts_telemetry::faults::Faults>,
}

/// One readiness check's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// `ok`, `warn` (degrades) or `fail` (unhealthy).
    status: &'static str,
    latency_ms: f64,
    detail: String,
}

impl Check {
    fn new(status: &'static str, started: Instant, detail: impl Into<String>) -> Self {
        Self {
            status,
            latency_ms: (started.elapsed().as_secs_f64() * 1e3 * 100.0).round() / 100.0,
            detail: detail.into(),
        }
    }
}

/// Keeps the worker and readiness gauges current: every 2 s until `stop`.
pub(crate) async fn watch(
    pool: Arc<Pool>,
    draining: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let serving = pool
            .statuses()
            .iter()
            .any(|w| w.serving && w.breaker != "open");
        crate::metrics::state(serving, serving && !draining.is_cancelled());
    }
}

/// Every worker's gRPC health (asked at once) and breaker, as one check:
/// `ok` when all serve with closed breakers, `warn` when some do, `fail`
/// when none does.
async fn check_workers(pool: &Pool) -> Check {
    let started = Instant::now();
    let workers = pool.all();
    let statuses = pool.statuses();
    let asks = workers
        .iter()
        .map(|w| check_worker(w.channel.clone(), &w.url));
    let checks = futures::future::join_all(asks).await;
    let mut usable = 0;
    let mut details = Vec::new();
    for (check, status) in checks.iter().zip(&statuses) {
        let ok = check.status == "ok" && status.breaker != "open";
        usable += usize::from(ok);
        details.push(if status.breaker == "closed" {
            check.detail.clone()
        } else {
            format!("{} (breaker {})", check.detail, status.breaker)
        });
    }
    let verdict = if workers.is_empty() {
        details.push("no worker is configured or registered".into());
        "fail"
    } else if usable == workers.len() {
        "ok"
    } else if usable > 0 {
        "warn"
    } else {
        "fail"
    };
    Check::new(verdict, started, details.join("; "))
}

/// Asks the worker's `grpc.health.v1` about the `tts.v1.Tts` service.
async fn check_worker(channel: Channel, url: &str) -> Check {
    let started = Instant::now();
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: tts_proto::HEALTH_SERVICE.into(),
    };
    match tokio::time::timeout(Duration::from_secs(2), client.check(request)).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => {
            Check::new("ok", started, format!("{url} SERVING"))
        }
        Ok(Ok(resp)) => Check::new(
            "fail",
            started,
            format!(
                "{url} answers {:?}",
                ServingStatus::try_from(resp.get_ref().status).unwrap_or(ServingStatus::Unknown)
            ),
        ),
        Ok(Err(status)) => Check::new(
            "fail",
            started,
            format!("{url} unreachable: {}", status.message()),
        ),
        Err(_) => Check::new("fail", started, format!("{url}: no answer within 2 s")),
    }
}

async fn check_redis(url: &str) -> Check {
    let started = Instant::now();
    let ping = async {
        let mut conn = tts_redis::connect(url).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match ping.await {
        Ok(pong) => Check::new("ok", started, format!("PING → {pong}")),
        Err(e) => Check::new(
            "warn",
            started,
            format!("redis: {e}; registry workers expire, static workers serve on"),
        ),
    }
}

fn check_disk(min_free_mb: u64) -> Check {
    let started = Instant::now();
    match nix::sys::statvfs::statvfs(".") {
        Ok(fs) => {
            let free_mb = fs.blocks_available() * fs.fragment_size() / (1 << 20);
            let status = if free_mb >= min_free_mb { "ok" } else { "warn" };
            Check::new(
                status,
                started,
                format!("{free_mb} MiB free (minimum {min_free_mb})"),
            )
        }
        Err(e) => Check::new("warn", started, format!("statvfs: {e}")),
    }
}

fn check_memory(min_available_mb: u64) -> Check {
    let started = Instant::now();
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    match available_kib {
        Some(kib) => {
            let mb = kib / 1024;
            let status = if mb >= min_available_mb { "ok" } else { "warn" };
            Check::new(
                status,
                started,
                format!("{mb} MiB available (minimum {min_available_mb})"),
            )
        }
        None => Check::new("ok", started, "MemAvailable not readable; not checked"),
    }
}

/// Speaks [`CANARY_TEXT`] through the worker and checks the audio: frame
/// count in range, sizes, sequence and checksums valid, not silent, not
/// clipped.
pub(crate) async fn canary(client: &TtsClient<Channel>, token: Option<&str>) -> Check {
    let started = Instant::now();
    let request = canary_request(CANARY_TEXT, crate::security::bearer(token));
    let mut client = client.clone();
    let run = async {
        let mut stream = client.synthesize(request).await?.into_inner();
        let (mut validator, mut tally, mut last) = (Validator::new(), Tally::default(), false);
        while let Some(frame) = stream.message().await? {
            tally.record(&validator.check(frame.sequence, frame.crc32c, &frame.payload));
            last |= frame.last;
        }
        Ok::<_, tonic::Status>((tally, last))
    };
    let (tally, last) = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(result)) => result,
        Ok(Err(status)) => {
            return Check::new(
                "fail",
                started,
                format!("synthesis failed: {}", status.message()),
            );
        }
        Err(_) => return Check::new("fail", started, "no complete answer within 10 s"),
    };
    let frames = tally.ok + tally.errors();
    let problem = if tally.errors() > 0 {
        Some(format!("{} frames failed verification", tally.errors()))
    } else if !CANARY_FRAMES.contains(&frames) || !last {
        Some(format!(
            "{frames} frames (expected {CANARY_FRAMES:?}, last flag {last})"
        ))
    } else if tally.silence == frames {
        Some("every frame is silent".to_owned())
    } else if tally.quality_events() > 0 {
        Some(format!(
            "quality events: {} clipping, {} DC offset, {} dead air, {} leading silence",
            tally.clipping, tally.dc_offset, tally.dead_air, tally.leading_silence
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Check::new("fail", started, p),
        None => Check::new(
            "ok",
            started,
            format!("{frames} frames, {} silent, checksums valid", tally.silence),
        ),
    }
}

#[derive(Debug, Serialize)]
struct Liveness {
    status: &'static str,
    version: &'static str,
    /// Where requests are relayed (the first worker).
    worker_url: String,
    /// The workers' gRPC health, for information: liveness does not depend on it.
    worker: Check,
    /// Every worker, its breaker and load.
    workers: Vec<WorkerStatus>,
    connections: u64,
    frames_received: u64,
    frames_sent: u64,
    frames_buffered: u64,
}

/// `GET /health`: 200 while the process serves; the body also says whether
/// the worker answers its gRPC health check.
pub(crate) async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let worker = check_workers(&state.pool).await;
    let s = &state.stats;
    Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        worker_url: state
            .pool
            .all()
            .first()
            .map(|w| w.url.clone())
            .unwrap_or_default(),
        worker,
        workers: state.pool.statuses(),
        connections: s.connections.load(Ordering::Relaxed),
        frames_received: s.frames_received.load(Ordering::Relaxed),
        frames_sent: s.frames_sent.load(Ordering::Relaxed),
        frames_buffered: s.frames_buffered.load(Ordering::Relaxed),
    })
}

/// One worker as `/info` describes it.
#[derive(Debug, Serialize)]
struct WorkerInfo {
    /// Its gRPC URL.
    url: String,
    /// Where it serves metrics, as it reports it (empty if unknown).
    metrics_url: String,
    version: String,
    voices: Vec<String>,
    default_voice: String,
    /// Where it synthesises: `cpu` or `cuda:N`.
    device: String,
    /// Its GPUs, described, when it runs on one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gpus: Vec<String>,
    /// Why the worker could not be asked, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Info {
    version: &'static str,
    /// The build: package version and target.
    build: String,
    /// Where clients connect.
    websocket_url: String,
    workers: Vec<WorkerInfo>,
    /// The Redis server of the registry and phrase cache, when one is
    /// used (without its password).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
}

/// `url` without the password, if it has one.
fn without_password(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let host = &url[at + 1..];
            let user = rest
                .split('@')
                .next()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("");
            if user.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        _ => url.to_owned(),
    }
}

/// `GET /info`: where the pipeline's parts are, so that a diagnostic tool
/// given only this listener's address finds the rest.
pub(crate) async fn info(
    State(state): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let host = if state.ws_addr.ip().is_unspecified() {
        // Listening on every address: the one this request came in on.
        let asked = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.rsplit_once(':').map_or(Some(h), |(host, _)| Some(host)))
            .unwrap_or("127.0.0.1");
        format!("{asked}:{}", state.ws_addr.port())
    } else {
        state.ws_addr.to_string()
    };
    let scheme = if state.ws_tls { "wss" } else { "ws" };
    let workers = state
        .pool
        .all()
        .into_iter()
        .map(|w| describe_worker(&state, w));
    let workers = futures::future::join_all(workers).await;
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        build: format!(
            "{} {}-{}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS
        ),
        websocket_url: format!("{scheme}://{host}/ws"),
        workers,
        redis_url: state.config.redis_url.as_deref().map(without_password),
    })
}

async fn describe_worker(state: &AdminState, worker: Arc<Worker>) -> WorkerInfo {
    let mut info = WorkerInfo {
        url: worker.url.clone(),
        metrics_url: String::new(),
        version: String::new(),
        voices: Vec::new(),
        default_voice: String::new(),
        device: String::new(),
        gpus: Vec::new(),
        error: None,
    };
    let request = state.pool.request(tts_proto::v1::ListVoicesRequest {});
    let mut client = worker.client.clone();
    match tokio::time::timeout(Duration::from_secs(2), client.list_voices(request)).await {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            info.metrics_url = answer.metrics_url;
            info.version = answer.version;
            info.voices = answer.voices.into_iter().map(|v| v.name).collect();
            info.default_voice = answer.default_voice;
            info.device = answer.device;
            info.gpus = answer
                .gpus
                .iter()
                .map(|g| {
                    format!(
                        "{}: {} (compute {}, {} of {} MiB free, CUDA driver {})",
                        g.index,
                        g.name,
                        g.compute_capability,
                        g.free_memory_bytes >> 20,
                        g.total_memory_bytes >> 20,
                        g.driver_version
                    )
                })
                .collect();
        }
        Ok(Err(status)) => info.error = Some(status.message().to_owned()),
        Err(_) => info.error = Some("no answer within 2 s".to_owned()),
    }
    info
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReadyQuery {
    #[serde(default)]
    deep: Option<String>,
}

#[derive(Debug, Serialize)]
struct Readiness {
    /// `healthy`, `degraded` or `unhealthy`.
    status: &'static str,
    checks: serde_json::Map<String, serde_json::Value>,
    /// Every worker, its breaker and load.
    workers: Vec<WorkerStatus>,
    /// Every fault injected now, here and in the workers (an experiment,
    /// not an incident); empty outside experiments.
    fault_injection: Vec<serde_json::Value>,
}

/// The faults injected now: this orchestrator's own, then each worker's
/// as its last load report said.
fn injected(state: &AdminState, workers: &[WorkerStatus]) -> Vec<serde_json::Value> {
    use tts_telemetry::faults::Component;
    let own = state
        .faults
        .list()
        .into_iter()
        .filter(|f| f.fault.component() == Component::Orchestrator)
        .filter_map(|f| serde_json::to_value(f).ok());
    let theirs = workers.iter().flat_map(|w| {
        w.faults.iter().map(|f| {
            let mut v = serde_json::json!({
                "component": "worker",
                "worker": w.url,
                "kind": f.kind,
                "remaining_s": f.remaining_s,
            });
            if let (Some(map), Ok(serde_json::Value::Object(params))) =
                (v.as_object_mut(), serde_json::from_str(&f.params_json))
            {
                map.extend(params);
            }
            v
        })
    });
    own.chain(theirs).collect()
}

/// `GET /ready[?deep=1]`: every check with its status, latency and detail;
/// 200 when healthy or degraded, 503 when unhealthy.
pub(crate) async fn ready(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ReadyQuery>,
) -> impl IntoResponse {
    let config = &state.config;
    if state.draining.is_cancelled() {
        let started = Instant::now();
        let mut checks = serde_json::Map::new();
        let check = Check::new("fail", started, "shutting down: draining requests");
        checks.insert(
            "drain".into(),
            serde_json::to_value(check).unwrap_or_default(),
        );
        let workers = state.pool.statuses();
        let body = Readiness {
            status: "unhealthy",
            checks,
            fault_injection: injected(&state, &workers),
            workers,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    let mut checks: Vec<(&str, Check)> = vec![
        ("worker", check_workers(&state.pool).await),
        ("disk", check_disk(config.min_free_disk_mb)),
        ("memory", check_memory(config.min_available_memory_mb)),
    ];
    if let Some(url) = &config.redis_url {
        checks.push(("redis", check_redis(url).await));
    }
    if matches!(query.deep.as_deref(), Some("1" | "true")) {
        checks.push(("canary", cached_canary(&state).await));
    }
    let status = if checks.iter().any(|(_, c)| c.status == "fail") {
        "unhealthy"
    } else if checks.iter().any(|(_, c)| c.status == "warn") {
        "degraded"
    } else {
        "healthy"
    };
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let checks = checks
        .into_iter()
        .map(|(name, c)| (name.to_owned(), serde_json::to_value(c).unwrap_or_default()))
        .collect();
    let workers = state.pool.statuses();
    (
        code,
        Json(Readiness {
            status,
            checks,
            fault_injection: injected(&state, &workers),
            workers,
        }),
    )
}

/// The canary's last result while fresh; a new run otherwise. Concurrent
/// callers share one run.
async fn cached_canary(state: &AdminState) -> Check {
    let max_age = Duration::from_secs_f64(state.config.canary_cache_secs);
    let mut cache = state.canary.lock().await;
    if let Some((at, check)) = cache.as_ref()
        && at.elapsed() < max_age
    {
        return check.clone();
    }
    let check = match state.pool.any() {
        Ok(worker) => canary(&worker.client, state.config.worker_auth_token.as_deref()).await,
        Err(e) => Check::new("fail", Instant::now(), e.to_string()),
    };
    *cache = Some((Instant::now(), check.clone()));
    check
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    match &state.metrics {
        Some(handle) => tts_telemetry::metrics::metrics_response(handle).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder installed in this process\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_redis_url_is_shown_without_its_password() {
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            without_password("redis://:s3cret@h:6379/0"),
            "redis://h:6379/0"
        );
        assert_eq!(
            without_password("rediss://me:s3cret@h:6379"),
            "rediss://me@h:6379"
        );
    }
}
