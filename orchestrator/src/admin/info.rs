//! `GET /info`: where the pipeline's parts are (the client listener, each
//! worker and its metrics, Redis), so that a diagnostic tool given only
//! the admin listener's address finds the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;

use super::AdminState;
use crate::pool::Worker;
use crate::protocol::admin::{Info, WorkerInfo};

/// `GET /info`.
pub(crate) async fn info(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let scheme = if state.ws_tls { "wss" } else { "ws" };
    let host = websocket_host(&state, &headers);
    let workers = state
        .pool
        .all()
        .into_iter()
        .map(|w| describe_worker(&state, w));
    let workers = futures::future::join_all(workers).await;
    Json(Info {
        version: env!("CARGO_PKG_VERSION").to_owned(),
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

/// Where clients reach the WebSocket: the listener's address, or, when it
/// listens on every address, the host this request came in on.
fn websocket_host(state: &AdminState, headers: &HeaderMap) -> String {
    if !state.ws_addr.ip().is_unspecified() {
        return state.ws_addr.to_string();
    }
    let asked = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':').map_or(Some(h), |(host, _)| Some(host)))
        .unwrap_or("127.0.0.1");
    format!("{asked}:{}", state.ws_addr.port())
}

/// One worker, as it describes itself (`ListVoices`, bounded in time).
async fn describe_worker(state: &AdminState, worker: Arc<Worker>) -> WorkerInfo {
    let mut info = WorkerInfo {
        url: worker.url.clone(),
        ..WorkerInfo::default()
    };
    let request = state.pool.request(tts_proto::v1::ListVoicesRequest {});
    let mut client = worker.client.clone();
    match tokio::time::timeout(Duration::from_secs(2), client.list_voices(request)).await {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            info.metrics_url = reachable_metrics(&answer.metrics_url, &worker.url);
            info.version = answer.version;
            info.voices = answer.voices.into_iter().map(|v| v.name).collect();
            info.default_voice = answer.default_voice;
            info.device = answer.device;
            info.gpus = answer.gpus.iter().map(describe_gpu).collect();
        }
        Ok(Err(status)) => info.error = Some(status.message().to_owned()),
        Err(_) => info.error = Some("no answer within 2 s".to_owned()),
    }
    info
}

/// A worker's metrics URL as its listener names it, which for a listener
/// on every address (`0.0.0.0`, `[::]`) no other host can use: then the
/// worker's metrics are at the host the orchestrator reaches it at (a
/// container's service name, a pod's address).
fn reachable_metrics(metrics_url: &str, worker_url: &str) -> String {
    let (Ok(metrics), Ok(worker)) = (
        metrics_url.parse::<axum::http::Uri>(),
        worker_url.parse::<axum::http::Uri>(),
    ) else {
        return metrics_url.to_owned();
    };
    let unspecified = metrics
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_unspecified());
    match (unspecified, worker.host(), metrics.port_u16()) {
        (true, Some(host), Some(port)) => format!(
            "{}://{host}:{port}{}",
            metrics.scheme_str().unwrap_or("http"),
            metrics.path()
        ),
        _ => metrics_url.to_owned(),
    }
}

fn describe_gpu(g: &tts_proto::v1::Gpu) -> String {
    format!(
        "{}: {} (compute {}, {} of {} MiB free, CUDA driver {})",
        g.index,
        g.name,
        g.compute_capability,
        g.free_memory_bytes >> 20,
        g.total_memory_bytes >> 20,
        g.driver_version
    )
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

#[cfg(test)]
mod tests {
    use super::{reachable_metrics, without_password};

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

    #[test]
    fn a_worker_listening_on_every_address_is_scraped_where_it_is_reached() {
        assert_eq!(
            reachable_metrics("http://0.0.0.0:9091/metrics", "http://worker-1:7001"),
            "http://worker-1:9091/metrics"
        );
        assert_eq!(
            reachable_metrics("http://[::]:9091/metrics", "http://10.0.0.7:7001"),
            "http://10.0.0.7:9091/metrics"
        );
        // A specific address is the worker's own choice.
        assert_eq!(
            reachable_metrics("http://127.0.0.1:9091/metrics", "http://worker-1:7001"),
            "http://127.0.0.1:9091/metrics"
        );
        assert_eq!(reachable_metrics("", "http://worker-1:7001"), "");
    }
}
