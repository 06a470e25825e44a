//! Open loop: requests at a fixed or Poisson rate, one connection each,
//! timed from their scheduled start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tts_client::Client;

use super::request::{failed, one_request, pick};
use super::{Budget, RunConfig, Sample};
use crate::stats::RequestResult;

/// Starts requests on the arrival clock until the budget is spent, then
/// waits for those in flight.
pub(super) async fn open_loop(
    config: Arc<RunConfig>,
    rate: f64,
    poisson: bool,
    started: Instant,
    tx: mpsc::Sender<Sample>,
) {
    let budget = Budget {
        limit: config.limit,
        started,
        claimed: AtomicU64::new(0),
    };
    let outstanding = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::from_std(started);
    while budget.claim() {
        tokio::time::sleep_until(next).await;
        let scheduled = next.into_std();
        next += gap(&config, rate, poisson, scheduled.duration_since(started));
        if outstanding.load(Ordering::Relaxed) >= config.max_outstanding as u64 {
            let _ = tx
                .send(Sample::Request(failed(
                    &started,
                    scheduled,
                    "client_backlog",
                )))
                .await;
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (config, tx, outstanding) = (Arc::clone(&config), tx.clone(), Arc::clone(&outstanding));
        tasks.spawn(async move {
            let result = arrival(&config, scheduled, started).await;
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Sample::Request(result)).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// The time to the next arrival, `elapsed` into the run: the rate ramps up
/// linearly over the ramp-up time; Poisson arrivals draw it from an
/// exponential distribution.
fn gap(config: &RunConfig, rate: f64, poisson: bool, elapsed: Duration) -> Duration {
    let ramp = if config.ramp_up.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / config.ramp_up.as_secs_f64()).clamp(0.05, 1.0)
    };
    let interval = 1.0 / (rate * ramp).max(1e-6);
    let gap = if poisson {
        -interval * (1.0 - rand::rng().random::<f64>()).ln()
    } else {
        interval
    };
    Duration::from_secs_f64(gap)
}

/// One arrival: a connection of its own and one request on it, timed from
/// its scheduled start.
async fn arrival(config: &RunConfig, scheduled: Instant, started: Instant) -> RequestResult {
    match Client::connect(&config.url).await {
        Ok(mut client) => {
            client.timeout = config.request_timeout;
            let connected = Instant::now();
            let mut r =
                one_request(&mut client, config, pick(&config.texts), scheduled, started).await;
            r.connect = Some(connected.duration_since(scheduled));
            r
        }
        Err(_) => failed(&started, scheduled, "connect"),
    }
}
