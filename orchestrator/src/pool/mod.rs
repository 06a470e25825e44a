//! The workers requests go to, and how one is chosen.
//!
//! Each worker has its own gRPC channel, a circuit breaker fed by the
//! outcome of the requests sent to it, and the load it last reported
//! (`GetLoad`, polled every `--worker-poll-ms`). A request goes to the least-loaded
//! worker that serves, has the voice and whose breaker lets it through.
//!
//! Load is the worker's own admission estimate: the share of its synthesis
//! threads that its admitted streams need. Between two reports the
//! requests this orchestrator has started since the last one are added at
//! the worker's average cost per stream, so that a burst does not all land
//! on the worker that looked idlest a moment ago.
//!
//! Workers come from `--worker` (static, never dropped) and, with
//! `--redis-url`, from the registry (dropped when their entry expires).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tts_proto::v1::tts_client::TtsClient;
use tts_proto::v1::{ListVoicesRequest, LoadRequest};

use crate::metrics;

/// How long a load poll may take before the worker counts as not serving.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Assumed share of a worker's threads one stream needs, until the worker
/// has reported a stream of its own.
const DEFAULT_STREAM_COST: f64 = 0.1;

/// How the workers are reached and when a breaker opens.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) stream_window: u32,
    pub(crate) tls: Option<ClientTlsConfig>,
    pub(crate) auth: Option<MetadataValue<Ascii>>,
    /// Consecutive failed requests that open a worker's breaker.
    pub(crate) breaker_failures: u32,
    /// How long an open breaker refuses requests before one probe.
    pub(crate) breaker_cooldown: Duration,
    /// How often each worker is asked for its load.
    pub(crate) poll: Duration,
}

/// A breaker's state, as metrics and `/ready` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Consecutive failures open it; after the cool-down one request (the
/// probe) goes through: its success closes the breaker, its failure opens
/// it again.
#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    failures: u32,
    opened: Instant,
    probing: bool,
}

impl Breaker {
    fn new() -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            opened: Instant::now(),
            probing: false,
        }
    }

    /// Whether a request may go now (`Some(true)` when it is the probe).
    fn allows(&self, now: Instant, cooldown: Duration) -> Option<bool> {
        match self.state {
            BreakerState::Closed => Some(false),
            BreakerState::Open if now.duration_since(self.opened) >= cooldown => Some(true),
            BreakerState::HalfOpen if !self.probing => Some(true),
            BreakerState::Open | BreakerState::HalfOpen => None,
        }
    }

    fn start_probe(&mut self) {
        self.state = BreakerState::HalfOpen;
        self.probing = true;
    }

    /// Records an outcome; returns the new state when it changed.
    fn record(&mut self, ok: bool, threshold: u32) -> Option<BreakerState> {
        let before = self.state;
        self.probing = false;
        if ok {
            self.failures = 0;
            self.state = BreakerState::Closed;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.state == BreakerState::HalfOpen || self.failures >= threshold {
                self.state = BreakerState::Open;
                self.opened = Instant::now();
            }
        }
        (self.state != before).then_some(self.state)
    }
}

/// The last `GetLoad` answer.
#[derive(Debug, Clone, Copy)]
struct Load {
    streams: u32,
    utilisation: f64,
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    /// `None` until the first poll answers.
    serving: Option<bool>,
    load: Option<Load>,
    /// Requests this orchestrator started on it since the last report.
    started_since_report: u32,
    /// Requests this orchestrator has on it now.
    inflight: u32,
    /// Its voices and their revisions, once listed.
    voices: Option<HashMap<String, String>>,
    /// Its default voice, once listed.
    default_voice: Option<String>,
    /// Why the last poll failed.
    problem: Option<String>,
    /// Faults injected into it, as its last load report said.
    faults: Vec<tts_proto::v1::InjectedFault>,
    /// From the registry: unused after this instant unless renewed
    /// (`None` for a static worker).
    expires: Option<Instant>,
}

impl State {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// One worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    pub(crate) client: TtsClient<Channel>,
    state: Mutex<State>,
}

impl Worker {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is plain
        // data and stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its load as routing sees it (lower is better).
    fn score(&self, state: &State) -> f64 {
        match state.load {
            Some(load) => {
                let per_stream = if load.streams > 0 {
                    load.utilisation / f64::from(load.streams)
                } else {
                    DEFAULT_STREAM_COST
                };
                load.utilisation + f64::from(state.started_since_report) * per_stream
            }
            None => f64::from(state.inflight) * DEFAULT_STREAM_COST,
        }
    }
}

/// What `/ready`, `/info` and `doctor health` show of one worker.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WorkerStatus {
    pub(crate) url: String,
    /// `static` (from `--worker`) or `registry`.
    pub(crate) source: &'static str,
    pub(crate) serving: bool,
    pub(crate) breaker: &'static str,
    pub(crate) utilisation: Option<f64>,
    pub(crate) streams: Option<u32>,
    /// This orchestrator's requests on it now.
    pub(crate) inflight: u32,
    /// Voices it listed (none until it has been asked).
    pub(crate) voices: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) problem: Option<String>,
    /// Faults injected into it now, as its last load report said.
    #[serde(skip)]
    pub(crate) faults: Vec<tts_proto::v1::InjectedFault>,
}

/// No worker can take a request now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoWorker {
    #[error("no worker is configured or registered")]
    Empty,
    #[error("no worker serves voice {0:?}")]
    NoVoice(String),
    #[error("no worker is available: {0}")]
    Unavailable(String),
}

/// The workers.
#[derive(Debug)]
pub(crate) struct Pool {
    workers: RwLock<Vec<Arc<Worker>>>,
    settings: Settings,
    /// Where ties start, so that equal workers take turns.
    turn: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            workers: RwLock::new(Vec::new()),
            settings,
            turn: AtomicUsize::new(0),
        }
    }

    pub(crate) fn auth(&self) -> Option<&MetadataValue<Ascii>> {
        self.settings.auth.as_ref()
    }

    /// Adds a worker (lazily connected); `expires` for one from the
    /// registry. A worker already known only has its expiry renewed.
    pub(crate) fn add(&self, url: &str, expires: Option<Instant>) -> Result<bool, String> {
        if let Some(w) = self.find(url) {
            let mut state = w.state();
            if state.expires.is_some() {
                state.expires = expires;
            }
            return Ok(false);
        }
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("worker {url}: {e}"))?
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(self.settings.stream_window)
            // Data held by stalled streams counts against the connection
            // window, so it must fit many of them.
            .initial_connection_window_size(self.settings.stream_window.saturating_mul(512))
            // A worker that stops answering (crashed host, SIGSTOP) is
            // noticed within two seconds, streaming or idle.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        let endpoint = match &self.settings.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("worker {url} TLS: {e}"))?,
            None => endpoint,
        };
        let channel = endpoint.connect_lazy();
        let worker = Arc::new(Worker {
            url: url.to_owned(),
            client: TtsClient::new(channel.clone()).max_decoding_message_size(64 * 1024),
            channel,
            state: Mutex::new(State {
                breaker: Breaker::new(),
                serving: None,
                load: None,
                started_since_report: 0,
                inflight: 0,
                voices: None,
                default_voice: None,
                problem: None,
                faults: Vec::new(),
                expires,
            }),
        });
        metrics::worker_added(url);
        self.workers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(worker);
        Ok(true)
    }

    /// Drops registry workers whose entry has expired; returns their URLs.
    pub(crate) fn expire(&self, now: Instant) -> Vec<String> {
        let mut workers = self.workers.write().unwrap_or_else(|e| e.into_inner());
        let (gone, kept): (Vec<_>, Vec<_>) =
            workers.drain(..).partition(|w| w.state().expired(now));
        *workers = kept;
        gone.into_iter()
            .map(|w| {
                metrics::worker_removed(&w.url);
                w.url.clone()
            })
            .collect()
    }

    /// The voice a request for `voice` (empty: the default) is spoken
    /// with, and that voice's revision, as the workers listed them; `None`
    /// until a worker that has it has been asked.
    pub(crate) fn revision(&self, voice: &str) -> Option<(String, String)> {
        self.all().iter().find_map(|w| {
            let state = w.state();
            let name = if voice.is_empty() {
                state.default_voice.clone()?
            } else {
                voice.to_owned()
            };
            let revision = state.voices.as_ref()?.get(&name)?.clone();
            Some((name, revision))
        })
    }

    pub(crate) fn find(&self, url: &str) -> Option<Arc<Worker>> {
        self.all().into_iter().find(|w| w.url == url)
    }

    /// Every worker now.
    pub(crate) fn all(&self) -> Vec<Arc<Worker>> {
        self.workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first worker: where calls that any worker can answer go when
    /// none is better known.
    pub(crate) fn any(&self) -> Result<Arc<Worker>, NoWorker> {
        let workers = self.all();
        let now = Instant::now();
        workers
            .iter()
            .find(|w| {
                let state = w.state();
                !state.expired(now) && state.serving == Some(true)
            })
            .or_else(|| workers.first())
            .cloned()
            .ok_or(NoWorker::Empty)
    }

    /// Chooses the least-loaded worker for `voice` (empty: the default
    /// voice, which every worker has), skipping `avoid`.
    pub(crate) fn pick(&self, voice: &str, avoid: Option<&str>) -> Result<Lease, NoWorker> {
        let workers = self.all();
        if workers.is_empty() {
            return Err(NoWorker::Empty);
        }
        let now = Instant::now();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        // The best serving worker (or one not yet polled); failing that,
        // the best one whose last poll said otherwise: that answer may be
        // stale (a worker that was still loading), and a worker that
        // really cannot serve refuses at once, before any audio.
        let mut best: Option<(f64, bool, &Arc<Worker>)> = None;
        let mut fallback: Option<(f64, bool, &Arc<Worker>)> = None;
        let mut has_voice = false;
        // Why workers were passed over, said only if none is left.
        let mut why: Vec<(&str, &str)> = Vec::new();
        for i in 0..workers.len() {
            let w = &workers[(start + i) % workers.len()];
            if Some(w.url.as_str()) == avoid {
                continue;
            }
            let state = w.state();
            if state.expired(now) {
                continue;
            }
            if let (false, Some(voices)) = (voice.is_empty(), &state.voices)
                && !voices.contains_key(voice)
            {
                continue;
            }
            has_voice = true;
            let Some(probe) = state.breaker.allows(now, self.settings.breaker_cooldown) else {
                why.push((&w.url, "breaker open"));
                continue;
            };
            let score = w.score(&state);
            let slot = if state.serving == Some(false) {
                why.push((&w.url, "not serving"));
                &mut fallback
            } else {
                &mut best
            };
            if slot.is_none_or(|(s, _, _)| score < s) {
                *slot = Some((score, probe, w));
            }
        }
        let best = best.or(fallback);
        let Some((_, probe, worker)) = best else {
            return Err(if !has_voice && avoid.is_none() {
                NoWorker::NoVoice(voice.to_owned())
            } else if why.is_empty() {
                NoWorker::Unavailable("no other worker".into())
            } else {
                let why: Vec<String> = why.iter().map(|(url, r)| format!("{url} {r}")).collect();
                NoWorker::Unavailable(why.join("; "))
            });
        };
        let mut state = worker.state();
        if probe {
            state.breaker.start_probe();
            metrics::breaker(&worker.url, BreakerState::HalfOpen);
        }
        state.inflight += 1;
        state.started_since_report += 1;
        drop(state);
        Ok(Lease {
            worker: Arc::clone(worker),
            threshold: self.settings.breaker_failures,
            settled: false,
        })
    }

    /// Every worker's state, for `/ready`, `/info` and `doctor health`.
    pub(crate) fn statuses(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        self.all()
            .iter()
            // An expired entry is gone, whether or not the registry has
            // been read since.
            .filter_map(|w| {
                let state = w.state();
                if state.expired(now) {
                    return None;
                }
                let breaker = match state.breaker.state {
                    BreakerState::Open
                        if now.duration_since(state.breaker.opened)
                            >= self.settings.breaker_cooldown =>
                    {
                        // Due a probe: the next request goes through.
                        BreakerState::HalfOpen
                    }
                    s => s,
                };
                Some(WorkerStatus {
                    url: w.url.clone(),
                    source: if state.expires.is_some() {
                        "registry"
                    } else {
                        "static"
                    },
                    serving: state.serving == Some(true),
                    breaker: breaker.as_str(),
                    utilisation: state
                        .load
                        .map(|l| (l.utilisation * 1000.0).round() / 1000.0),
                    streams: state.load.map(|l| l.streams),
                    inflight: state.inflight,
                    voices: state.voices.as_ref().map(HashMap::len),
                    problem: state.problem.clone(),
                    faults: state.faults.clone(),
                })
            })
            .collect()
    }

    /// Polls every worker's load every `poll` (and lists its voices once)
    /// until `stop`.
    pub(crate) async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let polls = self.all().into_iter().map(|w| self.poll(w));
            futures::future::join_all(polls).await;
            let serving = self
                .all()
                .iter()
                .filter(|w| w.state().serving == Some(true))
                .count();
            metrics::workers_serving(serving);
        }
    }

    /// Asks one worker for its load now (a worker just registered).
    pub(crate) async fn poll_now(&self, url: &str) {
        if let Some(worker) = self.find(url) {
            self.poll(worker).await;
        }
    }

    async fn poll(&self, worker: Arc<Worker>) {
        let mut client = worker.client.clone();
        let request = || {
            let mut r = tonic::Request::new(LoadRequest {});
            if let Some(auth) = self.auth() {
                r.metadata_mut().insert("authorization", auth.clone());
            }
            r
        };
        let answer = tokio::time::timeout(POLL_TIMEOUT, client.get_load(request())).await;
        let needs_voices = worker.state().voices.is_none();
        let serving = {
            let mut state = worker.state();
            match answer {
                Ok(Ok(report)) => {
                    let report = report.into_inner();
                    state.serving = Some(report.serving);
                    state.problem = (!report.serving).then(|| "not serving".to_owned());
                    state.load = Some(Load {
                        streams: report.streams,
                        utilisation: report.utilisation,
                    });
                    state.started_since_report = 0;
                    state.faults = report.faults;
                    metrics::worker_load(&worker.url, report.utilisation);
                }
                Ok(Err(status)) => {
                    state.serving = Some(false);
                    state.problem = Some(status.message().to_owned());
                }
                Err(_) => {
                    state.serving = Some(false);
                    state.problem = Some(format!("no load report within {POLL_TIMEOUT:?}"));
                }
            }
            state.serving == Some(true)
        };
        if serving && needs_voices {
            let mut r = tonic::Request::new(ListVoicesRequest {});
            if let Some(auth) = self.auth() {
                r.metadata_mut().insert("authorization", auth.clone());
            }
            if let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_secs(2), client.list_voices(r)).await
            {
                let list = list.into_inner();
                let voices = list.voices.into_iter().map(|v| (v.name, v.revision));
                let mut state = worker.state();
                state.voices = Some(voices.collect());
                state.default_voice = Some(list.default_voice);
            }
        }
    }
}

/// A request's hold on its worker: counted in the worker's in-flight
/// requests until dropped. Say how the request went with
/// [`Lease::succeeded`] or [`Lease::failed`]; a lease dropped without
/// either (a cancelled request) does not move the breaker.
#[derive(Debug)]
pub(crate) struct Lease {
    worker: Arc<Worker>,
    threshold: u32,
    settled: bool,
}

impl Lease {
    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The worker answered as a worker should (audio, or a coded refusal
    /// of the request's own making).
    pub(crate) fn succeeded(mut self) {
        self.settle(true);
    }

    /// The worker failed the request (unreachable, stream cut, no audio in
    /// time, a frame that fails verification).
    pub(crate) fn failed(mut self) {
        self.settle(false);
    }

    fn settle(&mut self, ok: bool) {
        self.settled = true;
        let changed = self.worker.state().breaker.record(ok, self.threshold);
        if let Some(state) = changed {
            metrics::breaker(&self.worker.url, state);
            tracing::warn!(worker = %self.worker.url, breaker = state.as_str(),
                "worker circuit breaker changed state");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.worker.state();
        state.inflight = state.inflight.saturating_sub(1);
        if !self.settled && state.breaker.probing {
            // The probe ended without a verdict: let another one through.
            state.breaker.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            connect_timeout: Duration::from_millis(100),
            stream_window: 65_536,
            tls: None,
            auth: None,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(50),
            poll: Duration::from_millis(500),
        }
    }

    fn report(pool: &Pool, url: &str, streams: u32, utilisation: f64) {
        let w = pool.find(url).expect("known worker");
        let mut s = w.state();
        s.serving = Some(true);
        s.load = Some(Load {
            streams,
            utilisation,
        });
        s.started_since_report = 0;
    }

    #[tokio::test]
    async fn picks_the_least_loaded_and_counts_what_it_started_since() {
        let pool = Pool::new(settings());
        pool.add("http://127.0.0.1:1", None).expect("url");
        pool.add("http://127.0.0.1:2", None).expect("url");
        report(&pool, "http://127.0.0.1:1", 4, 0.4);
        report(&pool, "http://127.0.0.1:2", 1, 0.1);
        // 0.1 per stream on both: three new streams go to :2 before :1
        // (0.4) is as loaded; then they alternate.
        let mut leases = Vec::new();
        let mut to = Vec::new();
        for _ in 0..5 {
            let lease = pool.pick("", None).expect("a worker");
            to.push(lease.worker().url.clone());
            leases.push(lease);
        }
        let second = to.iter().filter(|u| u.ends_with(":2")).count();
        assert!(to[..3].iter().all(|u| u.ends_with(":2")), "{to:?}");
        assert_eq!(second, 4, "{to:?}");
    }

    #[tokio::test]
    async fn the_breaker_opens_after_consecutive_failures_and_one_probe_closes_it() {
        let pool = Pool::new(settings());
        let url = "http://127.0.0.1:1";
        pool.add(url, None).expect("url");
        report(&pool, url, 0, 0.0);
        for _ in 0..3 {
            pool.pick("", None).expect("closed").failed();
        }
        assert_eq!(pool.statuses()[0].breaker, "open");
        assert!(matches!(pool.pick("", None), Err(NoWorker::Unavailable(_))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let probe = pool.pick("", None).expect("the probe goes through");
        assert!(pool.pick("", None).is_err(), "one probe at a time");
        probe.failed();
        assert_eq!(pool.statuses()[0].breaker, "open", "a failed probe reopens");
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A probe that ends without a verdict lets the next one through.
        drop(pool.pick("", None).expect("probe"));
        pool.pick("", None).expect("probe again").succeeded();
        assert_eq!(pool.statuses()[0].breaker, "closed");
        pool.pick("", None).expect("closed again");
    }

    #[tokio::test]
    async fn a_worker_said_not_serving_is_only_a_last_resort() {
        let pool = Pool::new(settings());
        pool.add("http://127.0.0.1:1", None).expect("url");
        pool.add("http://127.0.0.1:2", None).expect("url");
        report(&pool, "http://127.0.0.1:1", 0, 0.0);
        report(&pool, "http://127.0.0.1:2", 0, 0.9);
        pool.find("http://127.0.0.1:1").expect("w").state().serving = Some(false);
        let lease = pool.pick("", None).expect("a worker");
        assert!(lease.worker().url.ends_with(":2"), "the serving one first");
        drop(lease);
        pool.find("http://127.0.0.1:2").expect("w").state().serving = Some(false);
        // A stale answer (a worker that was loading) must not turn
        // requests away while the worker may serve by now.
        pool.pick("", None).expect("tried anyway");
    }

    #[tokio::test]
    async fn voices_and_expiry_narrow_the_choice() {
        let pool = Pool::new(settings());
        pool.add("http://127.0.0.1:1", None).expect("url");
        let soon = Instant::now() + Duration::from_millis(30);
        pool.add("http://127.0.0.1:2", Some(soon)).expect("url");
        report(&pool, "http://127.0.0.1:1", 0, 0.0);
        report(&pool, "http://127.0.0.1:2", 0, 0.9);
        pool.find("http://127.0.0.1:1").expect("w").state().voices =
            Some([("a".to_owned(), "r1".to_owned())].into());
        assert_eq!(pool.revision("a"), Some(("a".into(), "r1".into())));
        assert_eq!(pool.revision("b"), None, "not listed by anyone yet");
        assert_eq!(pool.revision(""), None, "no default known yet");
        let lease = pool.pick("b", None).expect("only :2 may have b");
        assert!(lease.worker().url.ends_with(":2"));
        drop(lease);
        assert!(matches!(
            pool.pick("b", Some("http://127.0.0.1:2")),
            Err(NoWorker::Unavailable(_))
        ));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(matches!(pool.pick("b", None), Err(NoWorker::NoVoice(_))));
        assert_eq!(pool.expire(Instant::now()), vec!["http://127.0.0.1:2"]);
        assert_eq!(pool.all().len(), 1);
    }
}
