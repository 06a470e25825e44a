//! The workloads: closed loop (N sessions, each sending its next request
//! when the last ends) and open loop (requests at a fixed or Poisson rate,
//! each timed from its *scheduled* start, so that a slow server cannot hide
//! queueing by slowing the sender: coordinated omission is corrected).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tts_client::{Client, ClientError, Event, ServerMessage, SynthesizeOptions};
use tts_frame::{checksum, decode_frame};

use crate::record::{Arrival, integrity};
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
    /// As soon as the previous request ends (a load that never idles).
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
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let stop = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config.clone());
    let pinger = (!config.ping_interval.is_zero()).then(|| {
        tokio::spawn(ping_loop(
            Arc::clone(&config),
            tx.clone(),
            Arc::clone(&stop),
        ))
    });
    let driver = match config.mode {
        Mode::Closed { concurrency } => tokio::spawn(closed_loop(
            Arc::clone(&config),
            concurrency,
            started,
            tx.clone(),
        )),
        Mode::Open { rate, poisson } => tokio::spawn(open_loop(
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

enum Sample {
    Request(RequestResult),
    Rtt(Duration),
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

async fn closed_loop(
    config: Arc<RunConfig>,
    concurrency: usize,
    started: Instant,
    tx: mpsc::UnboundedSender<Sample>,
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

async fn session(
    config: Arc<RunConfig>,
    budget: Arc<Budget>,
    started: Instant,
    stagger: Duration,
    tx: mpsc::UnboundedSender<Sample>,
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
                    let _ = tx.send(Sample::Request(failed(&started, scheduled, "connect")));
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
        if tx.send(Sample::Request(result)).is_err() {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

/// When a closed-loop session sends its next request after `result`.
fn next_request_at(config: &RunConfig, scheduled: Instant, result: &RequestResult) -> Instant {
    let now = Instant::now();
    if config.pace == Pace::BackToBack {
        return now;
    }
    if let Some(retry) = result.retry_after {
        return now + retry;
    }
    let played = match result.ttfa {
        Some(first) => scheduled + first + Duration::from_secs_f64(result.audio_seconds),
        None => now,
    };
    played.max(now) + config.think_time
}

async fn open_loop(
    config: Arc<RunConfig>,
    rate: f64,
    poisson: bool,
    started: Instant,
    tx: mpsc::UnboundedSender<Sample>,
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
        // The rate ramps up linearly over the ramp-up time.
        let elapsed = scheduled.duration_since(started);
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
        next += Duration::from_secs_f64(gap);
        if outstanding.load(Ordering::Relaxed) >= config.max_outstanding as u64 {
            let _ = tx.send(Sample::Request(failed(
                &started,
                scheduled,
                "client_backlog",
            )));
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (config, tx, outstanding) = (Arc::clone(&config), tx.clone(), Arc::clone(&outstanding));
        tasks.spawn(async move {
            let result = match Client::connect(&config.url).await {
                Ok(mut client) => {
                    client.timeout = config.request_timeout;
                    let connected = Instant::now();
                    let mut r = one_request(
                        &mut client,
                        &config,
                        pick(&config.texts),
                        scheduled,
                        started,
                    )
                    .await;
                    r.connect = Some(connected.duration_since(scheduled));
                    r
                }
                Err(_) => failed(&started, scheduled, "connect"),
            };
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Sample::Request(result));
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

fn pick(texts: &[String]) -> &str {
    if texts.is_empty() {
        return "Hello.";
    }
    &texts[rand::rng().random_range(0..texts.len())]
}

fn failed(started: &Instant, scheduled: Instant, code: &str) -> RequestResult {
    RequestResult {
        scheduled_at: scheduled.duration_since(*started).as_secs_f64(),
        connect: None,
        ttfa: None,
        arrivals: Vec::new(),
        integrity: Default::default(),
        error: Some(code.to_owned()),
        ended: None,
        retry_after: None,
        audio_seconds: 0.0,
        completed_text: None,
    }
}

fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, .. } => code.clone(),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::Closed => "closed".into(),
        ClientError::WebSocket(_) => "websocket".into(),
        ClientError::Protocol(_) => "protocol".into(),
    }
}

/// Sends one request and follows it to its end, recording every frame.
async fn one_request(
    client: &mut Client,
    config: &RunConfig,
    text: &str,
    scheduled: Instant,
    started: Instant,
) -> RequestResult {
    let mut result = failed(&started, scheduled, "protocol");
    let opts = SynthesizeOptions {
        voice: config.voice.clone(),
        fast: config.fast,
        ..SynthesizeOptions::default()
    };
    let started_request = match config.stream_input {
        None => client.start(text, &opts).await,
        Some(_) => client.open_context(&opts).await,
    };
    let request_id = match started_request {
        Ok(id) => id,
        Err(e) => {
            result.error = Some(error_code(&e));
            return result;
        }
    };
    let mut feed = config
        .stream_input
        .map(|interval| Feed::new(text, interval, scheduled));
    let (mut stream_id, mut malformed, mut samples) = (None::<u32>, 0u64, 0u64);
    loop {
        let next = feed.as_ref().and_then(Feed::next_at);
        let event = tokio::select! {
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()), if next.is_some() => {
                if let Some(f) = feed.as_mut()
                    && let Err(e) = f.send_next(client, &request_id, &mut result).await
                {
                    result.error = Some(error_code(&e));
                    break;
                }
                continue;
            }
            event = client.next_event() => event,
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                result.error = Some(error_code(&e));
                break;
            }
        };
        match event {
            Event::Message(m) if m.request_id() == Some(request_id.as_str()) => match m {
                ServerMessage::Start { stream_id: id, .. } => stream_id = Some(id),
                ServerMessage::End {
                    frames, samples: n, ..
                } => {
                    samples = n;
                    result.integrity = integrity(&result.arrivals, frames, malformed);
                    result.error = None;
                    break;
                }
                ServerMessage::Error {
                    code,
                    retry_after_ms,
                    ..
                } => {
                    result.error = Some(code.as_str().to_owned());
                    result.retry_after = retry_after_ms.map(Duration::from_millis);
                    break;
                }
                _ => {}
            },
            Event::Message(_) | Event::Other(_) => {}
            Event::Frame(bytes, at) => {
                let now_us = tts_frame::now_us();
                let Ok((header, payload)) = decode_frame(&bytes) else {
                    malformed += 1;
                    continue;
                };
                if Some(header.stream_id) != stream_id {
                    continue;
                }
                result.arrivals.push(Arrival {
                    sequence: header.sequence,
                    at: at.saturating_duration_since(scheduled),
                    worker_to_orchestrator_us: header
                        .orchestrator_ts_us
                        .saturating_sub(header.worker_ts_us),
                    orchestrator_to_client_us: now_us.saturating_sub(header.orchestrator_ts_us),
                    checksum_ok: checksum(payload) == header.crc32c,
                });
            }
        }
    }
    result.ended = Some(scheduled.elapsed());
    if result.error.is_some() {
        result.integrity = integrity(&result.arrivals, result.arrivals.len() as u64, malformed);
    }
    result.ttfa = result.arrivals.first().map(|a| a.at);
    result.audio_seconds = samples as f64 / f64::from(tts_frame::SAMPLE_RATE);
    result
}

/// A context's text, sent one word per piece on a clock, as a language
/// model writes it.
struct Feed {
    pieces: Vec<String>,
    sent: usize,
    interval: Duration,
    start: Instant,
    cutter: tts_protocol::Cutter,
}

impl Feed {
    fn new(text: &str, interval: Duration, start: Instant) -> Self {
        let pieces = text
            .split_inclusive(char::is_whitespace)
            .map(str::to_owned)
            .collect();
        Self {
            pieces,
            sent: 0,
            interval,
            start,
            cutter: tts_protocol::Cutter::default(),
        }
    }

    /// When the next piece (or, after the last, the `close`) is due.
    fn next_at(&self) -> Option<Instant> {
        (self.sent <= self.pieces.len()).then(|| self.start + self.interval * self.sent as u32)
    }

    /// Sends the next piece, or `close` after the last; notes in `result`
    /// when the text first held a complete clause (by the server's rule),
    /// the close counting as completing what is left.
    async fn send_next(
        &mut self,
        client: &mut Client,
        request_id: &str,
        result: &mut RequestResult,
    ) -> Result<(), ClientError> {
        let completes = match self.pieces.get(self.sent) {
            Some(piece) => {
                client.append(request_id, piece).await?;
                self.cutter.push(piece);
                !self.cutter.complete().is_empty()
            }
            None => {
                client.close_context(request_id).await?;
                true
            }
        };
        self.sent += 1;
        if completes && result.completed_text.is_none() {
            result.completed_text = Some(self.start.elapsed());
        }
        Ok(())
    }
}

/// The ping side channel: its own connection, one ping per interval.
async fn ping_loop(
    config: Arc<RunConfig>,
    tx: mpsc::UnboundedSender<Sample>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut client) = Client::connect(&config.url).await else {
        return;
    };
    client.timeout = Duration::from_secs(5);
    let mut id = 0u64;
    let mut tick = tokio::time::interval(config.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        id += 1;
        match client.ping(id).await {
            Ok(rtt) => {
                if tx.send(Sample::Rtt(rtt)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
