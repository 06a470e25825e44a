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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tts_frame::{Tally, Validator};
use tts_telemetry::faults::{Fault, Faults};

use crate::audio::{AudioFault, Frame, Framer, Resampler, to_s16};
use crate::engine::{ClauseState, EngineError, Synthesizer, Voice, WordSpan};
use crate::metrics;
use crate::sched::{Delivery, Demand, Next, Playout, Policy, Step, StreamId, Streams};
use crate::text::Clause;
use crate::watchdog::{self, Progress};

/// Ids that follow a request through logs.
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    /// The request.
    pub request_id: String,
    /// The trace it belongs to.
    pub trace_id: String,
    /// The client session it came from.
    pub session_id: String,
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// As many requests as allowed are in flight.
    #[error("{0} requests are already in flight")]
    Full(usize),
    /// The text would be more audio than one request may have.
    #[error("the text would be about {estimate:.0} s of audio; the limit is {limit:.0} s")]
    TooLong {
        /// Estimated audio, seconds.
        estimate: f64,
        /// The limit, seconds.
        limit: f64,
    },
    /// The request would make admitted streams late.
    #[error("the worker is at capacity; retry in {} ms", retry_after.as_millis())]
    Overloaded {
        /// When it would fit, as far as the worker can tell.
        retry_after: Duration,
    },
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

/// A ratio kept as decayed sums: recent observations weigh most, and
/// large ones more than small ones.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    num: f64,
    den: f64,
}

impl Ratio {
    /// Each observation keeps this share of the past (≈ the last 50 count).
    const KEEP: f64 = 0.98;

    fn seeded(value: f64) -> Self {
        Self {
            num: value,
            den: 1.0,
        }
    }

    fn add(&mut self, num: f64, den: f64) {
        self.num = self.num * Self::KEEP + num;
        self.den = self.den * Self::KEEP + den;
    }

    fn value(&self) -> f64 {
        if self.den > 0.0 {
            self.num / self.den
        } else {
            0.0
        }
    }
}

/// What the worker has measured about a voice.
#[derive(Debug, Clone)]
struct Estimate {
    /// The voice's name (a metric label).
    voice: String,
    /// Compute seconds per second of audio.
    cost: Ratio,
    /// Audio seconds per character of text.
    audio_per_char: Ratio,
}

impl Estimate {
    fn demand(&self, audio: f64) -> Demand {
        Demand {
            audio,
            cost: self.cost.value(),
        }
    }
}

/// The scheduler and the estimates, behind one lock.
struct State {
    streams: Streams<Job>,
    estimates: Vec<Estimate>,
    closed: bool,
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

    /// Removes a stream; returns whether none is left.
    fn remove(&self, id: StreamId) -> bool {
        let mut state = self.lock();
        // Dropping the job drops its work at once.
        drop(state.streams.remove(id));
        metrics::utilisation(state.streams.utilisation());
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
}

impl SynthPool {
    /// Starts the threads, each with its own synthesiser per voice (built,
    /// and warmed up on a short phrase, before this returns; a failure is
    /// returned).
    pub fn start(voices: &[Arc<dyn Voice>], config: PoolConfig) -> Result<Arc<Self>, EngineError> {
        let threads = config.policy.threads;
        let estimates: Vec<Estimate> = voices
            .iter()
            .map(|v| Estimate {
                voice: v.info().name.clone(),
                cost: Ratio::seeded(0.1),
                audio_per_char: Ratio::seeded(0.065),
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
        let (ready_tx, ready_rx) = channel();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let voices: Vec<Arc<dyn Voice>> = voices.to_vec();
            let shared = Arc::clone(&shared);
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("synth-{i}"))
                .spawn(move || match SynthThread::new(i, &voices) {
                    Ok(mut t) => {
                        let _ = ready.send(t.warm_up(&voices));
                        drop(ready);
                        t.serve(&shared);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| EngineError::Runtime(format!("spawning a synthesis thread: {e}")))?;
            handles.push(handle);
        }
        drop(ready_tx);
        let mut state = shared.lock();
        for measured in ready_rx.iter().take(threads) {
            for (estimate, m) in state.estimates.iter_mut().zip(measured?) {
                estimate.cost.add(m.compute, m.audio);
                estimate.audio_per_char.add(m.audio, m.chars);
            }
        }
        for e in &state.estimates {
            metrics::voice_cost(&e.voice, e.cost.value());
            metrics::voice_cost_baseline(&e.voice, e.cost.value());
        }
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
        }))
    }

    /// Stops the synthesis threads and waits up to `limit` for them to
    /// end, so that their engine sessions (and any GPU memory they hold)
    /// are released before the process exits rather than during its exit.
    /// Returns whether every thread ended in time. Blocks the caller.
    pub fn close(&self, limit: Duration) -> bool {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        let deadline = Instant::now() + limit;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        while threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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

    /// Admits a request and starts streaming its frames into `frames`;
    /// a request that ends early also says why in `abort`, which its reader
    /// sees even when the frame queue is full. Returns at once; the frames
    /// follow as steps are synthesised.
    pub fn submit(
        self: &Arc<Self>,
        voice: usize,
        clauses: Vec<Clause>,
        delivery: Delivery,
        ids: RequestIds,
        frames: mpsc::Sender<Sent>,
        abort: tokio::sync::oneshot::Sender<Failure>,
    ) -> Result<(), SubmitError> {
        let permit = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| SubmitError::Full(self.config.max_requests))?;
        let info = self.voices[voice].info();
        let resampler = Resampler::new(info.sample_rate, tts_frame::SAMPLE_RATE)
            .map_err(|_| SubmitError::Full(self.config.max_requests))?;
        let chars: usize = clauses.iter().map(|c| c.text.chars().count()).sum();
        // Faster speech is less audio for the same text.
        let speed = clauses.first().map_or(1.0, |c| f64::from(c.prosody.speed));
        let arrival = Instant::now();
        let (events_tx, events) = mpsc::unbounded_channel();
        let job = Job {
            voice,
            request: Arc::from(ids.request_id.as_str()),
            arrival,
            clauses: clauses.into(),
            clause: ClauseState::Done,
            clause_chars: 0,
            chars_left: chars,
            audio: Box::new(AudioState {
                resampler,
                framer: Framer::default(),
                gain: info.gain,
                samples: 0,
                fault: self.config.faults.audio().and_then(audio_fault),
            }),
            events: events_tx,
            native: 0,
            clause_start: 0,
            words: Vec::new(),
        };
        let (id, playout) = {
            let mut state = self.shared.lock();
            let demand = state.estimates[voice]
                .demand(chars as f64 * state.estimates[voice].audio_per_char.value() / speed);
            if demand.audio > self.config.max_audio_secs {
                return Err(SubmitError::TooLong {
                    estimate: demand.audio,
                    limit: self.config.max_audio_secs,
                });
            }
            let id = state
                .streams
                .admit(arrival, demand, delivery)
                .map_err(|r| SubmitError::Overloaded {
                    retry_after: r.retry_after,
                })?;
            state.streams.insert(id, job);
            metrics::utilisation(state.streams.utilisation());
            let playout = state.streams.playout(id).unwrap_or_default();
            (id, playout)
        };
        self.shared.ready.notify_one();
        let sender = Sender {
            pool: Arc::clone(self),
            id,
            delivery,
            playout,
            arrival,
            _permit: permit,
            ids,
            tx: frames,
            abort: Some(abort),
            events,
            checks: Checks::default(),
        };
        let span = tracing::info_span!("synthesize", request_id = %sender.ids.request_id,
            trace_id = %sender.ids.trace_id, session_id = %sender.ids.session_id);
        tts_telemetry::otel::link_trace(&span, &sender.ids.trace_id);
        tokio::spawn(tracing::Instrument::instrument(sender.run(), span));
        Ok(())
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

/// A request's audio state between steps: it travels with the job, so
/// resampling and framing continue seamlessly whichever thread runs the
/// next step.
struct AudioState {
    resampler: Resampler,
    framer: Framer,
    gain: f32,
    /// 48 kHz samples produced so far.
    samples: u64,
    fault: Option<AudioFault>,
}

impl AudioState {
    /// Limits, converts (and applies the fault hook to) resampled audio and
    /// cuts it into frames.
    fn frame(&mut self, resampled: &[f32], frames: &mut Vec<Frame>) {
        let (gain, fault, start) = (self.gain, self.fault, self.samples);
        self.samples += resampled.len() as u64;
        let samples = resampled.iter().enumerate().map(|(i, &s)| {
            let s = to_s16(s, gain);
            fault.map_or(s, |f| f.apply(start + i as u64, s))
        });
        self.framer.push(samples, frames);
    }
}

/// The audio an injected quality fault does to a request's samples.
fn audio_fault(fault: Fault) -> Option<AudioFault> {
    match fault {
        Fault::Clipping { from_ms, len_ms } => Some(AudioFault::Clipping { from_ms, len_ms }),
        Fault::DcOffset { offset } => Some(AudioFault::DcOffset(offset)),
        Fault::DeadAir { from_ms, len_ms } => Some(AudioFault::Dropout { from_ms, len_ms }),
        _ => None,
    }
}

/// One request's work, owned by the scheduler between steps.
struct Job {
    voice: usize,
    /// The request's id (what a stalled thread reports it holds).
    request: Arc<str>,
    /// When the request arrived.
    arrival: Instant,
    /// Clauses not started.
    clauses: VecDeque<Clause>,
    /// The clause in progress (`Done` between clauses).
    clause: ClauseState,
    /// Characters of the clause in progress.
    clause_chars: usize,
    /// Characters of the clauses not started.
    chars_left: usize,
    audio: Box<AudioState>,
    events: mpsc::UnboundedSender<Sent>,
    /// Samples (at the voice's rate) emitted so far.
    native: u64,
    /// Where the clause in progress starts, in those samples.
    clause_start: u64,
    /// Words placed but not yet attached to a frame.
    words: Vec<tts_proto::v1::Word>,
}

impl Job {
    fn finished(&self) -> bool {
        self.clause.is_done() && self.clauses.is_empty()
    }

    /// Audio seconds still to produce, exact for the clause in progress
    /// once its text part has run.
    fn remaining_audio(&self, rate: u32, audio_per_char: f64) -> f64 {
        let current = match self.clause.remaining_samples() {
            Some(samples) => samples as f64 / f64::from(rate),
            None => self.clause_chars as f64 * audio_per_char,
        };
        current + self.chars_left as f64 * audio_per_char
    }
}

/// What a step did.
struct StepReport {
    compute: Duration,
    /// Audio produced, seconds.
    audio: f64,
    /// The clause's whole length, when this step started it.
    clause: Option<(f64, usize)>,
}

/// What one thread owns: a synthesiser per voice and a scratch buffer.
struct SynthThread {
    /// Its index among the pool's threads.
    index: usize,
    /// The voices' names, by index.
    names: Vec<String>,
    synthesizers: Vec<Box<dyn Synthesizer>>,
    /// By voice: whether steps of several streams may run together (the
    /// voice streams inside clauses, so its steps are decoder windows).
    batchable: Vec<bool>,
    resampled: Vec<f32>,
}

/// A warm-up measurement.
struct Measured {
    compute: f64,
    audio: f64,
    chars: f64,
}

impl SynthThread {
    fn new(index: usize, voices: &[Arc<dyn Voice>]) -> Result<Self, EngineError> {
        let synthesizers = voices
            .iter()
            .map(|v| v.synthesizer())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            index,
            names: voices.iter().map(|v| v.info().name.clone()).collect(),
            synthesizers,
            batchable: voices.iter().map(|v| v.info().streaming).collect(),
            resampled: Vec::new(),
        })
    }

    /// Speaks a short phrase twice with every voice (the first run sets up
    /// the runtime's buffers) and measures the second.
    fn warm_up(&mut self, voices: &[Arc<dyn Voice>]) -> Result<Vec<Measured>, EngineError> {
        const PHRASE: &str = "This phrase warms the voice up.";
        let clause = Clause {
            text: PHRASE.into(),
            terminator: Some('.'),
            ..Clause::default()
        };
        let mut measured = Vec::new();
        for (synth, voice) in self.synthesizers.iter_mut().zip(voices) {
            let mut samples = 0usize;
            synth.synthesize(&clause, &mut |_| true)?;
            let started = Instant::now();
            synth.synthesize(&clause, &mut |s| {
                samples += s.len();
                true
            })?;
            measured.push(Measured {
                compute: started.elapsed().as_secs_f64(),
                audio: samples as f64 / f64::from(voice.info().sample_rate.max(1)),
                chars: PHRASE.len() as f64,
            });
        }
        Ok(measured)
    }

    fn serve(&mut self, shared: &Shared) {
        let mut state = shared.lock();
        // Whether this thread ran a step since it last fell idle.
        let mut worked = false;
        loop {
            if state.closed {
                return;
            }
            let now = Instant::now();
            match state.streams.next(now) {
                Next::Run(mut lead) => {
                    let batchable = &self.batchable;
                    let mut steps = state.streams.companions(&mut lead, now, |a, b| {
                        a.voice == b.voice && batchable.get(a.voice) == Some(&true)
                    });
                    steps.insert(0, lead);
                    drop(state);
                    worked = true;
                    let done = self.run(steps, shared);
                    state = shared.lock();
                    for done in done {
                        done.settle(&mut state);
                    }
                    metrics::utilisation(state.streams.utilisation());
                }
                Next::Wait(None) if worked && state.streams.is_empty() => {
                    // Idle: this thread's last steps may have freed their
                    // buffers after the last stream's own trim.
                    worked = false;
                    drop(state);
                    crate::alloc::trim();
                    state = shared.lock();
                }
                Next::Wait(until) => {
                    state = match until {
                        Some(at) => {
                            let wait = at.saturating_duration_since(now);
                            shared
                                .ready
                                .wait_timeout(state, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => shared.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                    };
                }
            }
        }
    }

    /// Runs a batch of steps (often one); what to tell the scheduler comes
    /// back, one for each.
    fn run(&mut self, steps: Vec<Step<Job>>, shared: &Shared) -> Vec<Done> {
        let _busy = metrics::SynthesisGuard::new();
        let voice = steps.first().map_or(0, |s| s.job.voice);
        let name = self.names.get(voice).map_or("", String::as_str);
        shared
            .progress
            .begin(self.index, name, steps.iter().map(|s| &s.job.request));
        // An injected stall holds the steps without progress (until it
        // ends, or the pool closes).
        while shared.faults.stalled() && !shared.lock().closed {
            std::thread::sleep(Duration::from_millis(20));
        }
        let batched = steps.len() > 1;
        let wide = steps.first().is_some_and(|s| s.wide);
        let mut jobs = Vec::with_capacity(steps.len());
        let mut about = Vec::with_capacity(steps.len());
        for Step {
            id,
            job,
            due,
            first,
            ..
        } in steps
        {
            jobs.push(job);
            about.push((id, due, first));
        }
        let results = self.steps(&mut jobs, wide, &shared.faults);
        shared.progress.end(self.index);
        let now = Instant::now();
        jobs.into_iter()
            .zip(about)
            .zip(results)
            .map(|((job, (id, due, first)), result)| {
                metrics::step_finished(due, now);
                if first {
                    metrics::first_step(now.saturating_duration_since(job.arrival), batched);
                }
                Done { id, job, result }
            })
            .collect()
    }

    /// Runs the next step of each job (all of one voice): one by one
    /// through the voice's synthesiser, or together when there are several.
    /// A batch's compute is shared out by the audio each job got.
    fn steps(
        &mut self,
        jobs: &mut [Job],
        wide: bool,
        faults: &Faults,
    ) -> Vec<Result<StepReport, EngineError>> {
        let starts: Vec<Option<usize>> = jobs.iter_mut().map(Job::begin_clause).collect();
        let voice = jobs.first().map_or(0, |j| j.voice);
        let Some(synth) = self.synthesizers.get_mut(voice) else {
            return jobs
                .iter()
                .map(|_| Err(EngineError::Runtime(format!("no voice #{voice}"))))
                .collect();
        };
        let n = jobs.len();
        let mut native = vec![0usize; n];
        let mut frames: Vec<Vec<Frame>> = (0..n).map(|_| Vec::new()).collect();
        let (mut clauses, mut audio): (Vec<&mut ClauseState>, Vec<&mut AudioState>) = jobs
            .iter_mut()
            .map(|j| (&mut j.clause, &mut *j.audio))
            .unzip();
        let resampled = &mut self.resampled;
        let mut emit = |i: usize, samples: &[f32]| {
            native[i] += samples.len();
            resampled.clear();
            audio[i].resampler.process(samples, resampled);
            audio[i].frame(resampled, &mut frames[i]);
        };
        let started = Instant::now();
        let outcomes = match &mut clauses[..] {
            [one] => vec![
                synth
                    .step(one, wide, &mut |s| emit(0, s))
                    .map(|()| synth.take_words()),
            ],
            many => synth.step_many(many, &mut emit),
        };
        if let Some(factor) = faults.slowdown() {
            // An injected slowdown: the step takes `factor` times as long,
            // as when another process takes the CPU.
            std::thread::sleep(started.elapsed().mul_f64(factor - 1.0));
        }
        let compute = started.elapsed();
        let total = native.iter().sum::<usize>();
        jobs.iter_mut()
            .zip(outcomes)
            .zip(native.into_iter().zip(frames))
            .zip(starts)
            .map(|(((job, outcome), (native, frames)), starts)| {
                let words = outcome?;
                let share = if total > 0 {
                    native as f64 / total as f64
                } else {
                    1.0 / n as f64
                };
                Ok(job.finish_step(
                    &mut self.resampled,
                    frames,
                    native,
                    words,
                    compute.mul_f64(share),
                    starts,
                ))
            })
            .collect()
    }
}

impl Job {
    /// Takes the next clause when the one in progress is done; returns its
    /// characters when it does.
    fn begin_clause(&mut self) -> Option<usize> {
        if !self.clause.is_done() {
            return None;
        }
        let clause = self.clauses.pop_front()?;
        let chars = clause.text.chars().count();
        self.chars_left = self.chars_left.saturating_sub(chars);
        self.clause_chars = chars;
        self.clause = ClauseState::Pending(clause);
        self.clause_start = self.native;
        Some(chars)
    }

    /// After a step produced `native` samples, cut into `frames`, and
    /// placed `words`: flushes the audio at the request's end, attaches the
    /// words and sends the frames to the request's sender.
    fn finish_step(
        &mut self,
        resampled: &mut Vec<f32>,
        mut frames: Vec<Frame>,
        native: usize,
        words: Vec<WordSpan>,
        compute: Duration,
        starts_clause: Option<usize>,
    ) -> StepReport {
        let audio = &mut *self.audio;
        let rate = audio.resampler.rate();
        if self.clause.is_done() && self.clauses.is_empty() {
            resampled.clear();
            audio.resampler.finish(resampled);
            audio.frame(resampled, &mut frames);
            frames.extend(audio.framer.finish());
        }
        self.native += native as u64;
        let clause_start = self.clause_start;
        let ms = |at: usize| ((clause_start + at as u64) * 1000 / u64::from(rate.max(1))) as u32;
        self.words
            .extend(words.into_iter().map(|w| tts_proto::v1::Word {
                start_ms: ms(w.start),
                end_ms: ms(w.end),
                text: w.text,
            }));
        // Words travel with the first frame of the step that placed them
        // (or the next step's, when this one cut none).
        if let Some(first) = frames.first_mut() {
            first.words.append(&mut self.words);
        }
        for frame in frames {
            // The sender may be gone; the scheduler drops the job then.
            let _ = self.events.send(Sent::Frame(frame));
        }
        let seconds = |samples: usize| samples as f64 / f64::from(rate.max(1));
        let clause = starts_clause.map(|chars| {
            let rest = self.clause.remaining_samples().unwrap_or(0);
            (seconds(native + rest), chars)
        });
        metrics::step_computed(compute, seconds(native));
        StepReport {
            compute,
            audio: seconds(native),
            clause,
        }
    }
}

/// A finished step on its way back to the scheduler.
struct Done {
    id: StreamId,
    job: Job,
    result: Result<StepReport, EngineError>,
}

impl Done {
    fn settle(self, state: &mut State) {
        let Self { id, job, result } = self;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let _ = job.events.send(Sent::Failed(e.into()));
                drop(state.streams.remove(id));
                return;
            }
        };
        let estimate = &mut state.estimates[job.voice];
        estimate
            .cost
            .add(report.compute.as_secs_f64(), report.audio.max(1e-3));
        metrics::voice_cost(&estimate.voice, estimate.cost.value());
        if let Some((audio, chars)) = report.clause
            && chars > 0
        {
            estimate.audio_per_char.add(audio, chars as f64);
        }
        if job.finished() {
            // Dropping the job closes the sender's channel: it sends what
            // is left and ends.
            drop(state.streams.remove(id));
            return;
        }
        let rate = job.audio.resampler.rate();
        let estimate = &state.estimates[job.voice];
        let demand = estimate.demand(job.remaining_audio(rate, estimate.audio_per_char.value()));
        let produced = job.audio.framer.frames_cut();
        // A job whose stream was removed meanwhile is dropped here.
        drop(state.streams.put_back(id, job, produced, demand));
    }
}

/// Sends one request's frames on its playout clock.
struct Sender {
    pool: Arc<SynthPool>,
    id: StreamId,
    delivery: Delivery,
    playout: Arc<Playout>,
    arrival: Instant,
    _permit: OwnedSemaphorePermit,
    ids: RequestIds,
    tx: mpsc::Sender<Sent>,
    abort: Option<tokio::sync::oneshot::Sender<Failure>>,
    events: mpsc::UnboundedReceiver<Sent>,
    checks: Checks,
}

/// Removes a stream from the scheduler when its sender ends, however it
/// ends: its queued work is dropped at once.
struct RemoveOnDrop(Arc<Shared>, StreamId);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.remove(self.1) {
            // Idle: give back what the last requests' peaks left behind.
            crate::alloc::trim();
        }
    }
}

impl Sender {
    async fn run(mut self) {
        let _inflight = metrics::InflightGuard::new();
        let _remove = RemoveOnDrop(Arc::clone(&self.pool.shared), self.id);
        let mut pending: VecDeque<(Frame, Instant)> = VecDeque::new();
        let mut producing = true;
        let mut sent = 0u32;
        let mut blocked_since: Option<Instant> = None;
        loop {
            if !producing && pending.is_empty() {
                break;
            }
            let now = Instant::now();
            let release = pending
                .front()
                .map(|(f, _)| self.release_at(f.sequence, now));
            let releasable = release.is_some_and(|at| at <= now);
            if releasable && self.tx.capacity() == 0 {
                blocked_since.get_or_insert(now);
            }
            let stalled_at = blocked_since.map(|t| t + self.pool.config.stalled_after);
            tokio::select! {
                biased;
                _ = self.tx.closed() => {
                    debug!(request_id = %self.ids.request_id, trace_id = %self.ids.trace_id,
                        session_id = %self.ids.session_id, "receiver gone; synthesis stopped");
                    return;
                }
                _ = self.pool.force.cancelled() => {
                    end_early(&mut self.abort, &self.ids, Failure::ShuttingDown);
                    return;
                }
                _ = tokio::time::sleep_until(stalled_at.unwrap_or(now).into()), if stalled_at.is_some() => {
                    metrics::stalled();
                    end_early(&mut self.abort, &self.ids, Failure::Stalled(self.pool.config.stalled_after));
                    return;
                }
                event = self.events.recv(), if producing => match event {
                    Some(Sent::Frame(frame)) => pending.push_back((frame, Instant::now())),
                    Some(Sent::Failed(e)) => {
                        warn!(request_id = %self.ids.request_id, trace_id = %self.ids.trace_id,
                            session_id = %self.ids.session_id, error = %e, "synthesis failed");
                        end_early(&mut self.abort, &self.ids, e);
                        return;
                    }
                    None => producing = false,
                },
                _ = tokio::time::sleep_until(release.unwrap_or(now).into()), if !releasable && release.is_some() => {}
                permit = self.tx.reserve(), if releasable => {
                    let Ok(permit) = permit else { return };
                    if let Some(since) = blocked_since.take() {
                        metrics::backpressure(since.elapsed());
                    }
                    if let Some((frame, produced_at)) = pending.pop_front() {
                        metrics::frame_enqueued(self.tx.max_capacity() - self.tx.capacity());
                        self.account(&frame, produced_at, Instant::now());
                        let faults = &self.pool.config.faults;
                        let (corrupt, drop) =
                            (faults.corrupts(frame.sequence), faults.drops(frame.sequence));
                        let frame = self.checks.check(&self.ids, corrupt, frame);
                        if drop {
                            // Lost after the worker's own checks: the
                            // permit goes back unused and the next hop
                            // sees a gap.
                            continue;
                        }
                        permit.send(Sent::Frame(frame));
                        sent += 1;
                    }
                }
            }
        }
        if sent == 0 {
            end_early(&mut self.abort, &self.ids, Failure::NoAudio);
        }
    }

    /// When frame `k` may leave: at once for the first frame, for fast
    /// delivery and while draining, else the send-ahead before its due
    /// time.
    fn release_at(&self, k: u32, now: Instant) -> Instant {
        if self.delivery == Delivery::Fast || self.pool.draining.load(Ordering::Relaxed) {
            return now;
        }
        match self.playout.due(k) {
            Some(due) => due.checked_sub(self.pool.config.send_ahead).unwrap_or(now),
            None => now,
        }
    }

    /// Starts the clock on the first frame; counts a frame sent after its
    /// due time as a deadline miss when its synthesis was late, and moves
    /// the clock back when the reader held it up.
    fn account(&self, frame: &Frame, produced_at: Instant, sent_at: Instant) {
        if frame.sequence == 0 {
            self.playout.start(sent_at);
            if sent_at > self.arrival + self.pool.config.policy.first_audio_budget {
                metrics::deadline_miss("first_audio");
            }
        } else if let Some(due) = self.playout.due(frame.sequence)
            && sent_at > due
        {
            if produced_at > due {
                metrics::deadline_miss("playout");
            }
            let held = sent_at.saturating_duration_since(produced_at.max(due));
            if held > Duration::from_millis(2) {
                self.playout.shift_by(held);
            }
        }
        self.playout.sent_one();
    }
}

/// Ends a request before its last frame, saying why through its abort
/// slot, which the response stream reads before any queued frame (the
/// frame queue may be full).
fn end_early(
    abort: &mut Option<tokio::sync::oneshot::Sender<Failure>>,
    ids: &RequestIds,
    why: Failure,
) {
    info!(request_id = %ids.request_id, trace_id = %ids.trace_id,
        session_id = %ids.session_id, reason = %why, "request ended early");
    if let Some(abort) = abort.take() {
        let _ = abort.send(why);
    }
}

/// The checks a stream's frames pass before they leave: the same
/// validation and quality monitor as at every other hop.
#[derive(Default)]
struct Checks {
    validator: Validator,
    tally: Tally,
}

impl Checks {
    /// Validates a frame (and, with `corrupt`, flips a payload byte after
    /// its checksum: an injected fault).
    fn check(&mut self, ids: &RequestIds, corrupt: bool, mut frame: Frame) -> Frame {
        let outcome = self
            .validator
            .check(frame.sequence, frame.crc32c, &frame.payload);
        let events = self.tally.record(&outcome);
        metrics::frame_validated(&outcome, events);
        for event in events.iter() {
            warn!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                session_id = %ids.session_id, sequence = frame.sequence,
                event = event.as_str(), "audio quality event");
        }
        if corrupt && let Some(byte) = frame.payload.get_mut(100) {
            *byte ^= 0x5A;
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FixedCost, FixedCostVoice};

    #[test]
    fn closing_the_pool_ends_its_threads() {
        let voice: Arc<dyn Voice> = Arc::new(FixedCostVoice::new(
            "fixed",
            FixedCost {
                step_audio: Duration::from_millis(100),
                step_time: Duration::from_millis(1),
                audio_per_char: Duration::from_millis(50),
            },
        ));
        let pool = SynthPool::start(
            &[voice],
            PoolConfig {
                policy: Policy::default(),
                max_requests: 4,
                send_ahead: Duration::from_secs(1),
                stalled_after: Duration::from_secs(10),
                max_audio_secs: 60.0,
                faults: Faults::disabled(&[tts_telemetry::faults::Component::Worker]),
                stalled_thread_after: Duration::from_secs(5),
            },
        )
        .expect("pool");
        let threads = |p: &SynthPool| {
            p.threads
                .lock()
                .map(|t| t.iter().filter(|t| !t.is_finished()).count())
                .unwrap_or(0)
        };
        assert_eq!(threads(&pool), 2, "both threads wait for work");
        assert!(pool.close(Duration::from_secs(5)), "threads ended in time");
        assert_eq!(threads(&pool), 0);
        assert!(pool.close(Duration::ZERO), "closing again is harmless");
    }
}
