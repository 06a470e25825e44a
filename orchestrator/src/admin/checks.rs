//! Readiness checks: the workers' gRPC health and breakers, Redis, free
//! disk and available memory. Each says its verdict, how long it took and
//! what it found.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::pool::Pool;
use crate::protocol::admin::{Check, CheckStatus};

/// A check's result, timed from `started`.
pub(super) fn check(status: CheckStatus, started: Instant, detail: impl Into<String>) -> Check {
    Check {
        status,
        latency_ms: (started.elapsed().as_secs_f64() * 1e3 * 100.0).round() / 100.0,
        detail: detail.into(),
    }
}

/// Every worker's gRPC health (asked at once) and breaker, as one check:
/// `ok` when all serve with closed breakers, `warn` when some do, `fail`
/// when none does.
pub(super) async fn workers(pool: &Pool) -> Check {
    let started = Instant::now();
    let workers = pool.all();
    let statuses = pool.statuses();
    let asks = workers.iter().map(|w| worker(w.channel.clone(), &w.url));
    let checks = futures::future::join_all(asks).await;
    let mut usable = 0;
    let mut details = Vec::new();
    for (check, status) in checks.iter().zip(&statuses) {
        let ok = check.status == CheckStatus::Ok && status.breaker != "open";
        usable += usize::from(ok);
        details.push(if status.breaker == "closed" {
            check.detail.clone()
        } else {
            format!("{} (breaker {})", check.detail, status.breaker)
        });
    }
    let verdict = if workers.is_empty() {
        details.push("no worker is configured or registered".into());
        CheckStatus::Fail
    } else if usable == workers.len() {
        CheckStatus::Ok
    } else if usable > 0 {
        CheckStatus::Warn
    } else {
        CheckStatus::Fail
    };
    check(verdict, started, details.join("; "))
}

/// Asks the worker's `grpc.health.v1` about the `tts.v1.Tts` service.
async fn worker(channel: Channel, url: &str) -> Check {
    let started = Instant::now();
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: tts_proto::HEALTH_SERVICE.into(),
    };
    let fail = CheckStatus::Fail;
    match tokio::time::timeout(Duration::from_secs(2), client.check(request)).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => {
            check(CheckStatus::Ok, started, format!("{url} SERVING"))
        }
        Ok(Ok(resp)) => {
            let status =
                ServingStatus::try_from(resp.get_ref().status).unwrap_or(ServingStatus::Unknown);
            check(fail, started, format!("{url} answers {status:?}"))
        }
        Ok(Err(status)) => check(
            fail,
            started,
            format!("{url} unreachable: {}", status.message()),
        ),
        Err(_) => check(fail, started, format!("{url}: no answer within 2 s")),
    }
}

/// A Redis `PING` over `shared` (connected on first use); Redis away only
/// degrades readiness.
pub(super) async fn redis(
    shared: &tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    url: &str,
) -> Check {
    let started = Instant::now();
    let ping = async {
        let mut conn = shared
            .get_or_try_init(|| tts_redis::connect(url))
            .await?
            .clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match ping.await {
        Ok(pong) => check(CheckStatus::Ok, started, format!("PING → {pong}")),
        Err(e) => check(
            CheckStatus::Warn,
            started,
            format!(
                "redis: {e}; registry workers are kept while they answer, static workers serve on"
            ),
        ),
    }
}

/// Free disk where the process runs.
pub(super) fn disk(min_free_mb: u64) -> Check {
    let started = Instant::now();
    match nix::sys::statvfs::statvfs(".") {
        Ok(fs) => {
            let free_mb = fs.blocks_available() * fs.fragment_size() / (1 << 20);
            let status = if free_mb >= min_free_mb {
                CheckStatus::Ok
            } else {
                CheckStatus::Warn
            };
            let detail = format!("{free_mb} MiB free (minimum {min_free_mb})");
            check(status, started, detail)
        }
        Err(e) => check(CheckStatus::Warn, started, format!("statvfs: {e}")),
    }
}

/// Available memory, from `/proc/meminfo`.
pub(super) fn memory(min_available_mb: u64) -> Check {
    let started = Instant::now();
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    match available_kib {
        Some(kib) => {
            let mb = kib / 1024;
            let status = if mb >= min_available_mb {
                CheckStatus::Ok
            } else {
                CheckStatus::Warn
            };
            let detail = format!("{mb} MiB available (minimum {min_available_mb})");
            check(status, started, detail)
        }
        None => check(
            CheckStatus::Ok,
            started,
            "MemAvailable not readable; not checked",
        ),
    }
}
