//! Closed loop: sessions that each send their next request when the last
//! ends (or, paced by playout, once its audio has played).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tts_client::Client;

use super::request::{failed, one_request, pick};
use super::{Budget, Pace, RunConfig, Sample};
use crate::stats::RequestResult;

/// Runs `concurrency` sessions until the budget is spent.
pub(super) async fn closed_loop(
    config: Arc<RunConfig>,
    concurrency: usize,
    started: Instant,
    tx: mpsc::Sender<Sample>,
) {
    let budget = Arc::new(Budget {
        limit: config.limit,
        started,
        claimed: AtomicU64::new(0),
    });
    let sessions: Vec<_> = (0..concurrency.max(1))
        .map(|i| {
            // Staggered starts: spread over the ramp-up, plus up to 20 ms of
            // jitter, so that sessions never fire in phase.
            let stagger = config.ramp_up.mul_f64(i as f64 / concurrency.max(1) as f64)
                + Duration::from_micros(rand::rng().random_range(0..20_000));
            tokio::spawn(session(
                Arc::clone(&config),
                Arc::clone(&budget),
                started,
                stagger,
                tx.clone(),
            ))
        })
        .collect();
    for s in sessions {
        let _ = s.await;
    }
}

/// One session: a connection (renewed after `requests_per_connection`,
/// or when it broke) and its requests, one after another.
async fn session(
    config: Arc<RunConfig>,
    budget: Arc<Budget>,
    started: Instant,
    stagger: Duration,
    tx: mpsc::Sender<Sample>,
) {
    tokio::time::sleep(stagger).await;
    let mut conn: Option<(Client, u64)> = None;
    while budget.claim() {
        let scheduled = Instant::now();
        let mut connect = None;
        if conn.as_ref().is_none_or(|(_, used)| {
            config.requests_per_connection > 0 && *used >= config.requests_per_connection
        }) {
            let t = Instant::now();
            match Client::connect(&config.url).await {
                Ok(mut c) => {
                    c.timeout = config.request_timeout;
                    connect = Some(t.elapsed());
                    conn = Some((c, 0));
                }
                Err(_) => {
                    let _ = tx
                        .send(Sample::Request(failed(&started, scheduled, "connect")))
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((client, used)) = conn.as_mut() else {
            continue;
        };
        *used += 1;
        let text = pick(&config.texts);
        let mut result = one_request(client, &config, text, scheduled, started).await;
        result.connect = connect;
        if matches!(
            result.error.as_deref(),
            Some("closed" | "websocket" | "timeout" | "protocol")
        ) {
            conn = None;
        }
        let next = next_request_at(&config, scheduled, &result);
        if tx.send(Sample::Request(result)).await.is_err() {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

/// When a closed-loop session sends its next request after `result`.
fn next_request_at(config: &RunConfig, scheduled: Instant, result: &RequestResult) -> Instant {
    let now = Instant::now();
    if let Some(retry) = result.retry_after.filter(|_| config.honour_retry_after) {
        return now + retry;
    }
    if config.pace == Pace::BackToBack {
        return now;
    }
    let played = match result.ttfa {
        Some(first) => scheduled + first + Duration::from_secs_f64(result.audio_seconds),
        None => now,
    };
    played.max(now) + config.think_time
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Integrity;

    fn refused(retry: Duration) -> RequestResult {
        RequestResult {
            scheduled_at: 0.0,
            connect: None,
            ttfa: None,
            arrivals: Vec::new(),
            integrity: Integrity::default(),
            error: Some("overloaded".into()),
            ended: Some(Duration::from_millis(3)),
            retry_after: Some(retry),
            audio_seconds: 0.0,
            completed_text: None,
        }
    }

    #[test]
    fn a_refusal_waits_its_retry_after_in_every_pace_unless_told_not_to() {
        let retry = Duration::from_millis(400);
        for pace in [Pace::BackToBack, Pace::Playout] {
            let config = RunConfig {
                pace,
                ..RunConfig::default()
            };
            let before = Instant::now();
            let next = next_request_at(&config, before, &refused(retry));
            assert!(next >= before + retry, "{pace:?} retried early");
        }
        let abusive = RunConfig {
            honour_retry_after: false,
            ..RunConfig::default()
        };
        let next = next_request_at(&abusive, Instant::now(), &refused(retry));
        assert!(next < Instant::now() + retry / 2, "waited anyway");
    }
}
