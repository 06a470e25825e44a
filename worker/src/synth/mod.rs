//! Synthesis: a fixed pool of threads that run one step of one stream at a
//! time (or, with batching, the next steps of several streams of one voice
//! together), chosen by the deadline scheduler ([`crate::sched`]), and one async
//! sender per request that releases its frames on the stream's playout
//! clock.
//!
//! A thread never blocks on the network: it hands a step's frames to the
//! request's sender and goes back for the next step. The sender releases
//! frame `k` once it is at most the send-ahead before its due time (so a
//! listener holds a steady buffer instead of bursts and gaps) and counts
//! frames sent after their due time as deadline misses. When the reader
//! holds frames up, the clock moves back with it: a slow reader parks its
//! own stream, not anyone else's.

mod admit;
pub mod cost;
mod pacer;
mod queue;
mod thread;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tts_telemetry::faults::Faults;

pub use admit::SubmitError;
use admit::{Estimate, Ratio};
use cost::CallCost;
use thread::Job;

use crate::audio::Frame;
use crate::engine::{EngineError, Voice};
use crate::metrics;
use crate::sched::{Policy, StreamId, Streams};
use crate::watchdog::{self, Progress};

/// Where a request's frames go.
#[derive(Debug)]
pub struct Output {
    /// Its response stream (`--stream-queue-frames` frames at most).
    pub frames: mpsc::Sender<Sent>,
    /// Why it ended early, if it did; read before any queued frame.
    pub abort: oneshot::Sender<Failure>,
}

/// What the service gets for a request: its frames, then maybe why it
/// ended early.
#[derive(Debug)]
pub enum Sent {
    /// A frame, validated and ready for the wire.
    Frame(Frame),
    /// The request ended before its last frame; nothing more follows.
    Failed(Failure),
}

/// Why a request ended before its last frame.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The text produced no audio at all.
    #[error("the text produced no audio")]
    NoAudio,
    /// The worker's shutdown grace period ended first.
    #[error("the worker shut down before the request could finish")]
    ShuttingDown,
    /// The reader took no frame for this long.
    #[error("the reader took no frame for {0:?}")]
    Stalled(Duration),
}

/// Compute seconds per audio second assumed for a voice whose warm-up
/// measured no audio (the warm-up alone seeds it otherwise: a prior
/// beside it made the light espeak-ng voice look 20 times its cost).
const COST_PRIOR: f64 = 0.1;
/// Audio seconds per character assumed likewise.
const AUDIO_PER_CHAR_PRIOR: f64 = 0.065;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Scheduling and admission.
    pub policy: Policy,
    /// Requests admitted at once, whatever admission says.
    pub max_requests: usize,
    /// How far ahead of its due time a frame may leave.
    pub send_ahead: Duration,
    /// A request whose reader takes no frame for this long is ended.
    pub stalled_after: Duration,
    /// Most audio one request may ask for, seconds.
    pub max_audio_secs: f64,
    /// Injected faults (chaos experiments; none unless started).
    pub faults: Arc<Faults>,
    /// A synthesis thread holding work without progress for longer than
    /// this is reported (log line, metric).
    pub stalled_thread_after: Duration,
}

/// The scheduler and the estimates, behind one lock.
struct State {
    streams: Streams<Job>,
    estimates: Vec<Estimate>,
    closed: bool,
}

impl State {
    /// Removes a stream; dropping its job drops its work at once (and
    /// closes its pacer's queue). The streams left of its voice are priced
    /// again: with batching, fewer streams share each call.
    fn remove(&mut self, id: StreamId) {
        if let Some((job, group)) = self.streams.remove_with_group(id) {
            drop(job);
            self.reprice(group, 0);
        }
    }

    /// Prices the streams of `voice` as one of their number plus `extra`
    /// (with batching, a stream's share of a call depends on how many
    /// streams share it).
    fn reprice(&mut self, voice: usize, extra: usize) {
        if let Some(estimate) = self.estimates.get(voice)
            && estimate.batch > 1
        {
            let cost = estimate.cost(self.streams.peers(voice) + extra);
            self.streams.reprice(voice, cost);
        }
    }

    /// Publishes the admitted load: utilisation, and the real-time
    /// capacity and headroom at the default (first) voice's cost.
    fn publish_load(&self) {
        let policy = self.streams.policy();
        let cost = self
            .estimates
            .first()
            .map_or(0.0, |e| e.cost(self.streams.peers(0).max(1)));
        metrics::load(
            self.streams.utilisation(),
            policy.efficiency,
            policy.threads,
            cost,
        );
    }
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    /// Injected faults the threads apply (slowdown, stall).
    faults: Arc<Faults>,
    /// What each synthesis thread holds, for the watchdog.
    progress: Arc<Progress>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream `id`'s pacer made room in its queue while its job held frames
    /// back: they go in, and once they all have, the stream runs again (or,
    /// its last step done, leaves the scheduler). A job a thread is running
    /// holds none back.
    fn unblock(&self, id: StreamId) {
        let mut state = self.lock();
        let Some(job) = state.streams.job_mut(id) else {
            return;
        };
        if !job.queue.flush() {
            return;
        }
        if job.finished() {
            // Dropping the job closes the pacer's queue.
            state.remove(id);
            state.publish_load();
            return;
        }
        state.streams.unblock(id);
        drop(state);
        self.ready.notify_one();
    }

    /// Removes a stream; returns whether none is left.
    fn remove(&self, id: StreamId) -> bool {
        let mut state = self.lock();
        state.remove(id);
        state.publish_load();
        state.streams.is_empty()
    }
}

/// The synthesis threads, the scheduler and the admission limits.
pub struct SynthPool {
    shared: Arc<Shared>,
    voices: Vec<Arc<dyn Voice>>,
    admitted: Arc<Semaphore>,
    config: PoolConfig,
    /// Set while draining: frames leave as soon as they exist.
    draining: AtomicBool,
    /// Cancelled when the shutdown grace period is over: every request
    /// still streaming ends with [`Failure::ShuttingDown`].
    force: CancellationToken,
    /// The synthesis threads, joined by [`close`](Self::close).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Disconnects once every synthesis thread has ended (each holds a
    /// sender; nothing is ever sent).
    exits: Mutex<Receiver<Infallible>>,
}

impl SynthPool {
    /// Starts the threads, each with its own synthesiser per voice (built,
    /// and warmed up on a phrase, before this returns; a failure is
    /// returned).
    pub fn start(voices: &[Arc<dyn Voice>], config: PoolConfig) -> Result<Arc<Self>, EngineError> {
        let threads = config.policy.threads;
        let estimates: Vec<Estimate> = voices
            .iter()
            .map(|v| Estimate {
                voice: v.info().name.clone(),
                // Seeded by the warm-up below; the priors count only where
                // it measured nothing.
                cost: Ratio::default(),
                audio_per_char: Ratio::default(),
                calls: CallCost::default(),
                step_audio: Ratio::default(),
                accuracy: Ratio::default(),
                // Only a voice whose steps share calls is priced by them.
                batch: if v.info().streaming {
                    config.policy.batch
                } else {
                    1
                },
                grows: v.info().windows_grow,
                threads,
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: Streams::new(config.policy),
                estimates,
                closed: false,
            }),
            ready: Condvar::new(),
            faults: Arc::clone(&config.faults),
            progress: Progress::new(threads),
        });
        // Each thread reports its warm-up once (one message per thread),
        // and holds a sender of the exit channel, which carries nothing: it
        // disconnects when the last thread has ended.
        let (ready_tx, ready_rx) = sync_channel(threads);
        let (exit_tx, exits) = sync_channel::<Infallible>(0);
        let handles = (0..threads)
            .map(|i| {
                let (ready, exit) = (ready_tx.clone(), exit_tx.clone());
                thread::spawn(
                    i,
                    voices.to_vec(),
                    Arc::clone(&shared),
                    config.policy.batch,
                    ready,
                    exit,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop((ready_tx, exit_tx));
        let mut state = shared.lock();
        let mut sweeps: Vec<Vec<(usize, f64)>> = vec![Vec::new(); voices.len()];
        for measured in ready_rx.iter().take(threads) {
            for ((estimate, m), sweep) in state.estimates.iter_mut().zip(measured?).zip(&mut sweeps)
            {
                estimate.cost.add(m.compute, m.audio);
                estimate.audio_per_char.add(m.audio, m.chars);
                estimate.step_audio.add(m.sweep.audio, m.sweep.steps);
                sweep.extend(m.sweep.calls);
            }
        }
        for (e, sweep) in state.estimates.iter_mut().zip(&sweeps) {
            if e.cost.value() <= 0.0 {
                e.cost = Ratio::seeded(COST_PRIOR);
            }
            if e.audio_per_char.value() <= 0.0 {
                e.audio_per_char = Ratio::seeded(AUDIO_PER_CHAR_PRIOR);
            }
            e.calls = CallCost::seeded(sweep);
            metrics::voice_cost(&e.voice, e.cost.value());
            metrics::voice_cost_baseline(&e.voice, e.cost.value());
            if !sweep.is_empty() {
                let fit = e.calls.fit();
                metrics::call_model(&e.voice, fit, None);
                tracing::info!(
                    voice = %e.voice,
                    per_call_ms = fit.per_call * 1e3,
                    per_step_ms = fit.per_step * 1e3,
                    calls = sweep.len(),
                    "call model from the warm-up sweep"
                );
            }
        }
        state.publish_load();
        drop(state);
        metrics::admission_limit(config.policy.efficiency);
        let watched = Arc::clone(&shared);
        watchdog::spawn(
            Arc::clone(&shared.progress),
            config.stalled_thread_after,
            move || watched.lock().closed,
        )
        .map_err(|e| EngineError::Runtime(format!("spawning the watchdog: {e}")))?;
        Ok(Arc::new(Self {
            shared,
            voices: voices.to_vec(),
            admitted: Arc::new(Semaphore::new(config.max_requests)),
            config,
            draining: AtomicBool::new(false),
            force: CancellationToken::new(),
            threads: Mutex::new(handles),
            exits: Mutex::new(exits),
        }))
    }

    /// Stops the synthesis threads and waits up to `limit` for them to
    /// end, so that their engine sessions (and any GPU memory they hold)
    /// are released before the process exits rather than during its exit.
    /// Returns whether every thread ended in time. Blocks the caller.
    pub fn close(&self, limit: Duration) -> bool {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        let exits = self.exits.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(RecvTimeoutError::Timeout) = exits.recv_timeout(limit) {
            return false;
        }
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for t in threads.drain(..) {
            let _ = t.join();
        }
        true
    }

    /// From now on frames leave as soon as they exist and no stream is
    /// parked: streams finish as fast as the machine allows.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shared.lock().streams.unpark_all();
        self.shared.ready.notify_all();
    }

    /// The grace period is over: every request still streaming ends now
    /// with [`Failure::ShuttingDown`], said through its abort slot.
    pub fn force_stop(&self) {
        self.force.cancel();
    }

    /// The streams admitted now and the share of the threads they need.
    pub fn load(&self) -> (usize, f64) {
        let state = self.shared.lock();
        (state.streams.len(), state.streams.utilisation())
    }

    /// Synthesis threads.
    pub fn threads(&self) -> usize {
        self.config.policy.threads
    }
}

impl Drop for SynthPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod capacity_tests;
