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

mod breaker;
mod load;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tts_proto::v1::tts_client::TtsClient;

use crate::metrics;
use breaker::Breaker;
pub(crate) use breaker::BreakerState;
use load::Load;

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
}

/// What `/ready`, `/health` and `doctor health` show of one worker.
#[derive(Debug, Clone)]
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
    /// Why its last poll failed.
    pub(crate) problem: Option<String>,
    /// Faults injected into it now, as its last load report said.
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

    /// A call to a worker, with the worker token when one is set.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = self.auth() {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
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

    /// Registry workers whose entry is no longer `listed` expire `now`
    /// (an entry deleted from Redis, or no longer allowed).
    pub(crate) fn unlist(&self, listed: &std::collections::HashSet<String>, now: Instant) {
        for w in self.all() {
            let mut state = w.state();
            if state.expires.is_some() && !listed.contains(&w.url) {
                state.expires = Some(now);
            }
        }
    }

    /// Registry workers that answer their load polls are kept until at
    /// least `until`: while the registry cannot be read, or has just
    /// restarted empty, a missing renewal says nothing about the worker.
    /// One that stopped answering keeps its expiry.
    pub(crate) fn hold(&self, until: Instant) {
        for w in self.all() {
            let mut state = w.state();
            if state.serving == Some(true)
                && let Some(at) = state.expires
            {
                state.expires = Some(at.max(until));
            }
        }
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
        let mut choice = Choice::default();
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
            let allowed = state.breaker.allows(now, self.settings.breaker_cooldown);
            choice.consider(w, &state, allowed);
        }
        let (probe, worker) = choice.chosen(voice, avoid)?;
        let mut state = worker.state();
        if probe {
            state.breaker.start_probe();
            metrics::worker_breaker(&worker.url, BreakerState::HalfOpen.gauge());
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
}

/// The workers a request may go to, as [`Pool::pick`] goes through them:
/// the best serving worker (or one not yet polled); failing that, the best
/// one whose last poll said otherwise: that answer may be stale (a worker
/// that was still loading), and a worker that really cannot serve refuses
/// at once, before any audio.
#[derive(Default)]
struct Choice<'a> {
    /// Score, whether it would be the breaker's probe, the worker.
    best: Option<(f64, bool, &'a Arc<Worker>)>,
    fallback: Option<(f64, bool, &'a Arc<Worker>)>,
    /// Whether any worker has the voice.
    has_voice: bool,
    /// Why workers were passed over, said only if none is left.
    why: Vec<(&'a str, &'static str)>,
}

impl<'a> Choice<'a> {
    /// One worker that has the voice; `allowed` is what its breaker says
    /// (`Some(true)`: it would be the probe).
    fn consider(&mut self, w: &'a Arc<Worker>, state: &State, allowed: Option<bool>) {
        self.has_voice = true;
        let Some(probe) = allowed else {
            self.why.push((&w.url, "breaker open"));
            return;
        };
        let score = state.score();
        let slot = if state.serving == Some(false) {
            self.why.push((&w.url, "not serving"));
            &mut self.fallback
        } else {
            &mut self.best
        };
        if slot.is_none_or(|(s, _, _)| score < s) {
            *slot = Some((score, probe, w));
        }
    }

    /// The worker chosen and whether it is the probe, or why there is none.
    fn chosen(self, voice: &str, avoid: Option<&str>) -> Result<(bool, &'a Arc<Worker>), NoWorker> {
        if let Some((_, probe, worker)) = self.best.or(self.fallback) {
            return Ok((probe, worker));
        }
        Err(if !self.has_voice && avoid.is_none() {
            NoWorker::NoVoice(voice.to_owned())
        } else if self.why.is_empty() {
            NoWorker::Unavailable("no other worker".into())
        } else {
            let why: Vec<String> = self
                .why
                .iter()
                .map(|(url, r)| format!("{url} {r}"))
                .collect();
            NoWorker::Unavailable(why.join("; "))
        })
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
            metrics::worker_breaker(&self.worker.url, state.gauge());
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
