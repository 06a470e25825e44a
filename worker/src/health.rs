//! The worker's health as `grpc.health.v1` and `GetLoad` report it, and
//! the GPU watch that turns it off while device memory is short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthCheck, HealthServer};
use tonic_health::server::HealthReporter;
use tracing::{info, warn};
use tts_proto::HEALTH_SERVICE;

use crate::gpu;
use crate::metrics;
use crate::service::LoadedVoices;

/// The worker's health as `grpc.health.v1` and `GetLoad` report it, kept
/// in one place so that the two cannot disagree.
#[derive(Clone)]
pub(crate) struct Health {
    reporter: HealthReporter,
    serving: Arc<AtomicBool>,
}

impl Health {
    /// NOT_SERVING, and the `grpc.health.v1` service that reports it.
    pub(crate) async fn start() -> (Self, HealthServer<impl HealthCheck>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            serving: Arc::new(AtomicBool::new(false)),
        };
        health.set(ServingStatus::NotServing).await;
        (health, service)
    }

    /// Whether the worker is serving, as `GetLoad` reports it.
    pub(crate) fn serving(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.serving)
    }

    pub(crate) async fn set(&self, status: ServingStatus) {
        self.serving
            .store(status == ServingStatus::Serving, Ordering::Relaxed);
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(HEALTH_SERVICE, status)
            .await;
    }
}

/// Every 5 s until `stop`: refreshes the GPU inventory (metrics,
/// `ListVoices`) and reports NOT_SERVING while the device has less free
/// memory than `min_free_mb` (SERVING again once it has).
pub(crate) async fn watch_gpu(
    device: u32,
    min_free_mb: u64,
    gpus: Arc<std::sync::Mutex<Vec<gpu::GpuInfo>>>,
    loaded: Arc<LoadedVoices>,
    health: Health,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut short = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen =
            tokio::task::spawn_blocking(move || gpu::inventory(gpu::Device::Cuda(device))).await;
        let Ok(Ok(seen)) = seen else {
            warn!(device, "cannot read the GPU's state");
            continue;
        };
        metrics::gpus(&seen);
        let free_mb = seen
            .iter()
            .find(|g| g.index == device)
            .map_or(0, |g| g.free_memory_bytes >> 20);
        if let Ok(mut g) = gpus.lock() {
            *g = seen;
        }
        let now_short = free_mb < min_free_mb;
        if now_short != short && loaded.get().is_some() && !stop.is_cancelled() {
            if now_short {
                warn!(device, free_mb, min_free_mb, "GPU memory low: NOT_SERVING");
                health.set(ServingStatus::NotServing).await;
            } else {
                info!(device, free_mb, "GPU memory recovered: SERVING");
                health.set(ServingStatus::Serving).await;
            }
            short = now_short;
        }
    }
}
