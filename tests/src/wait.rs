//! Bounded waits on a condition, and the conditions the tests wait on.

use std::time::Duration;

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
