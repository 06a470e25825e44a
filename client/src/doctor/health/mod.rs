//! `doctor health`: the whole system's health in one table: the
//! orchestrator's liveness, readiness and metrics, the worker's gRPC health
//! and metrics, Redis if configured, listening ports, disk and memory (as
//! the orchestrator's readiness reports them), and the error and
//! checksum-failure counts the metrics hold. Given only the orchestrator's
//! admin address it finds the rest from its `/info`.

mod orchestrator;
mod probe;
mod rows;
#[cfg(test)]
mod tests;
mod worker;

use std::time::Duration;

use rows::{Row, findings};

use super::Findings;

pub use probe::probe;
pub use worker::DEFAULT_WORKER_METRICS;

/// Where to look: the orchestrator's admin address, and overrides for what
/// its `/info` reports.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Orchestrator admin base URL, e.g. `http://127.0.0.1:8081`.
    pub orchestrator: String,
    /// Worker gRPC URL; `None` uses the one the orchestrator reports.
    pub worker: Option<String>,
    /// Worker metrics URL (`…/metrics`); `None` uses the one the worker
    /// reports through the orchestrator.
    pub worker_metrics: Option<String>,
    /// WebSocket URL (its port is checked); `None` uses the orchestrator's.
    pub url: Option<String>,
    /// Redis URL, if one is used.
    pub redis: Option<String>,
}

/// Runs every check.
pub async fn run(targets: &Targets) -> Findings {
    let http = http_client();
    let base = targets.orchestrator.trim_end_matches('/');
    let mut rows: Vec<Row> = Vec::new();
    // Where everything else is, unless the flags say.
    let discovered = orchestrator::info(&http, base, &mut rows).await;
    let ws_url = targets
        .url
        .clone()
        .or(discovered.websocket_url)
        .unwrap_or_else(|| crate::DEFAULT_URL.to_owned());
    // Liveness, and the worker URL the orchestrator relays to.
    let reported_worker = orchestrator::liveness(&http, base, &mut rows).await;
    orchestrator::readiness(&http, base, &mut rows).await;
    orchestrator::metrics(&http, base, &mut rows).await;
    let workers = worker::targets(targets, discovered.workers, reported_worker);
    for (worker, metrics) in &workers {
        rows.extend(worker::rows(&http, worker, metrics.as_deref()).await);
    }
    if let Some(url) = &targets.redis {
        rows.push(probe::redis_ping(url).await);
    }
    for (name, url) in [("websocket port", ws_url.as_str()), ("admin port", base)] {
        rows.push(probe::port_open(name, url).await);
    }
    for (worker, _) in &workers {
        rows.push(probe::port_open("worker port", worker).await);
    }
    findings(rows)
}

/// An HTTP client that gives up after 5 s.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// The status and body of a GET, or why there is none.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = http.get(url).send().await.map_err(|e| error_text(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| error_text(&e))?;
    Ok((status, body))
}

/// An error and its sources, each said once.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
