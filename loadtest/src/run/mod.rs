//! The workloads: closed loop (N sessions, each sending its next request
//! when the last ends) and open loop (requests at a fixed or Poisson rate,
//! each timed from its *scheduled* start, so that a slow server cannot hide
//! queueing by slowing the sender: coordinated omission is corrected).
//!
//! # Layout
//! - `closed`: sessions back to back (or paced by playout).
//! - `open`: arrivals on a fixed or Poisson clock.
//! - `request`: one request followed to its end, and streamed input.
//! - `ping`: the ping side channel.

mod closed;
mod open;
mod ping;
mod request;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::stats::{Aggregate, RequestResult};

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` sessions, back to back.
    Closed {
        /// Sessions.
        concurrency: usize,
    },
    /// `rate` requests per second, one connection each.
    Open {
        /// Requests per second.
        rate: f64,
        /// Exponential inter-arrival times (Poisson arrivals) instead of fixed.
        poisson: bool,
    },
}

/// When a closed-loop session sends its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Pace {
    /// As soon as the previous request ends (a load that never idles); a
    /// refused one after the server's `retry_after_ms` unless told
    /// otherwise.
    #[default]
    BackToBack,
    /// Once the previous request's audio has finished playing (from its
    /// first frame, in real time), plus the think time: what a
    /// conversation looks like. A refused request is retried after the
    /// server's `retry_after_ms`.
    Playout,
}

/// When the run stops starting requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this long.
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Orchestrator WebSocket URL.
    pub url: String,
    /// Closed or open loop.
    pub mode: Mode,
    /// Duration or request count.
    pub limit: Limit,
    /// Sessions start spread over this time (closed loop); the rate rises
    /// linearly over it (open loop).
    pub ramp_up: Duration,
    /// Closed loop: requests per connection before reconnecting (0 = keep).
    pub requests_per_connection: u64,
    /// Texts to send, picked at random.
    pub texts: Vec<String>,
    /// Voice to ask for.
    pub voice: Option<String>,
    /// Jitter buffers to judge playout against.
    pub buffers: Vec<Duration>,
    /// Interval of the ping side channel (zero: no pings).
    pub ping_interval: Duration,
    /// Longest wait for any message of a request.
    pub request_timeout: Duration,
    /// Open loop: most requests outstanding before new ones are dropped
    /// (and counted as `client_backlog`).
    pub max_outstanding: usize,
    /// Closed loop: when a session sends its next request.
    pub pace: Pace,
    /// Closed loop: a refused request's session waits the server's
    /// `retry_after_ms` before its next request, in every pace (`false`:
    /// it retries at once, as an abusive client would).
    pub honour_retry_after: bool,
    /// Closed loop with [`Pace::Playout`]: the pause after the audio ends.
    pub think_time: Duration,
    /// Ask for `"delivery":"fast"` (frames as fast as synthesis allows)
    /// instead of real-time delivery.
    pub fast: bool,
    /// Send each text as streamed input (a context), one word per piece at
    /// this interval, instead of one `synthesize`.
    pub stream_input: Option<Duration>,
}

impl Default for RunConfig {
    /// One request of "Hello." to the default URL, real-time delivery,
    /// one 60 ms jitter buffer, no pings.
    fn default() -> Self {
        Self {
            url: tts_client::DEFAULT_URL.to_owned(),
            mode: Mode::Closed { concurrency: 1 },
            limit: Limit::Requests(1),
            ramp_up: Duration::ZERO,
            requests_per_connection: 0,
            texts: vec!["Hello.".to_owned()],
            voice: None,
            buffers: vec![Duration::from_millis(60)],
            ping_interval: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            max_outstanding: 4096,
            pace: Pace::BackToBack,
            honour_retry_after: true,
            think_time: Duration::ZERO,
            fast: false,
            stream_input: None,
        }
    }
}

impl RunConfig {
    /// The settings as they appear in the report's `config`; `mix` names
    /// where the texts came from.
    pub fn to_json(&self, mix: &str) -> serde_json::Value {
        let (concurrency, rate, arrivals) = match self.mode {
            Mode::Closed { concurrency } => (Some(concurrency), None, "closed"),
            Mode::Open { rate, poisson } => {
                (None, Some(rate), if poisson { "poisson" } else { "fixed" })
            }
        };
        let (duration, requests) = match self.limit {
            Limit::Duration(d) => (Some(d.as_secs_f64()), None),
            Limit::Requests(n) => (None, Some(n)),
        };
        serde_json::json!({
            "url": self.url,
            "mode": if concurrency.is_some() { "closed" } else { "open" },
            "concurrency": concurrency,
            "rate": rate,
            "arrivals": arrivals,
            "duration_seconds": duration,
            "requests": requests,
            "ramp_up_seconds": self.ramp_up.as_secs_f64(),
            "requests_per_connection": self.requests_per_connection,
            "texts": self.texts.len(),
            "mix": mix,
            "jitter_buffers_ms": self.buffers.iter().map(|b| b.as_millis() as u64).collect::<Vec<_>>(),
            "pace": match self.pace { Pace::BackToBack => "back-to-back", Pace::Playout => "playout" },
            "honour_retry_after": self.honour_retry_after,
            "think_time_seconds": self.think_time.as_secs_f64(),
            "delivery": if self.fast { "fast" } else { "realtime" },
            "stream_input_piece_ms": self.stream_input.map(|d| d.as_millis() as u64),
        })
    }
}

/// Runs the workload; `progress` sees the aggregate after each request.
pub async fn run(
    config: &RunConfig,
    mut progress: impl FnMut(&Aggregate),
) -> (Aggregate, Duration) {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Sample>(results_capacity(config));
    let stop = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config.clone());
    let pinger = (!config.ping_interval.is_zero()).then(|| {
        tokio::spawn(ping::ping_loop(
            Arc::clone(&config),
            tx.clone(),
            Arc::clone(&stop),
        ))
    });
    let driver = match config.mode {
        Mode::Closed { concurrency } => tokio::spawn(closed::closed_loop(
            Arc::clone(&config),
            concurrency,
            started,
            tx.clone(),
        )),
        Mode::Open { rate, poisson } => tokio::spawn(open::open_loop(
            Arc::clone(&config),
            rate,
            poisson,
            started,
            tx.clone(),
        )),
    };
    drop(tx);
    let mut agg = Aggregate::new(&config.buffers);
    let mut driver = Some(driver);
    loop {
        tokio::select! {
            sample = rx.recv() => match sample {
                Some(Sample::Request(r)) => {
                    agg.add(&r);
                    progress(&agg);
                }
                Some(Sample::Rtt(d)) => agg.add_rtt(d),
                None => break,
            },
            _ = async { if let Some(d) = driver.as_mut() { let _ = d.await; } }, if driver.is_some() => {
                // Requests are done: stop the side channel, drain what is left.
                driver = None;
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    if let Some(p) = pinger {
        let _ = p.await;
    }
    (agg, started.elapsed())
}

/// What the workload hands the aggregation: a finished request, or a
/// ping's round trip.
enum Sample {
    Request(RequestResult),
    Rtt(Duration),
}

/// Room in the results channel, in results (one per finished request or
/// ping): four for each request that may be in flight at once, so that the
/// workload does not wait on the aggregation, and a stalled aggregation
/// holds the workload back instead of growing without bound.
fn results_capacity(config: &RunConfig) -> usize {
    let concurrency = match config.mode {
        Mode::Closed { concurrency } => concurrency,
        Mode::Open { .. } => 1,
    };
    4 * concurrency.max(config.max_outstanding).max(1)
}

/// Claims the right to start one more request.
struct Budget {
    limit: Limit,
    started: Instant,
    claimed: AtomicU64,
}

impl Budget {
    fn claim(&self) -> bool {
        match self.limit {
            Limit::Duration(d) => self.started.elapsed() < d,
            Limit::Requests(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}
