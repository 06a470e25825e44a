//! Bounded waits on a condition, and the conditions the tests wait on.

use std::net::SocketAddr;
use std::time::Duration;

use tts_proto::v1::tts_client::TtsClient;
use tts_proto::v1::{LoadReport, LoadRequest};

use crate::{http_get, sample};

/// Polls `check` every 100 ms until it returns true or `limit` passes;
/// returns whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the worker at `url` answers `grpc.health.v1` with SERVING.
pub async fn worker_serving(url: &str) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: tts_proto::HEALTH_SERVICE.into(),
    };
    matches!(client.check(request).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

/// A worker's own account of its load (`GetLoad`): streams admitted and
/// not finished, utilisation, whether it serves. Panics when the worker
/// at `addr` does not answer: the tests ask workers they started.
pub async fn worker_load(addr: SocketAddr) -> LoadReport {
    let url = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("a worker URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the worker at {addr}: {e}"));
    TtsClient::new(channel)
        .get_load(LoadRequest {})
        .await
        .unwrap_or_else(|e| panic!("GetLoad from the worker at {addr}: {e}"))
        .into_inner()
}

/// One sample of the `/metrics` served on `admin` (an orchestrator's
/// admin listener or a worker's metrics listener): `series` is the name
/// with its labels as rendered (see [`sample`]); a missing series reads 0.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics on {admin}: {body}");
    sample(&body, series)
}

/// Waits (up to 10 s) until the orchestrator whose admin listener is
/// `admin` has listed its first worker's voices (phrases are keyed by a
/// voice's revision, known only then); returns whether it has.
pub async fn voices_listed(admin: SocketAddr) -> bool {
    eventually(Duration::from_secs(10), || async move {
        let (_, body) = http_get(admin, "/ready").await;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        ready["workers"][0]["voices"]
            .as_u64()
            .is_some_and(|n| n > 0)
    })
    .await
}
