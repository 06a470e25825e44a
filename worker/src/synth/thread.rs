//! The synthesis threads: each takes the runnable step with the earliest
//! deadline (with its batch companions), runs it on its own synthesiser,
//! frames the audio and hands the frames to the request's pacer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tts_telemetry::faults::{Fault, Faults};

use super::admit::{Measured, Sweep};
use super::queue::FrameQueue;
use super::{Shared, State};
use crate::audio::{AudioFault, Frame, Framer, Resampler, to_s16};
use crate::engine::{ClauseState, EngineError, Synthesizer, Voice, WordSpan};
use crate::metrics;
use crate::request::Speech;
use crate::sched::{Next, Step, StreamId};
use crate::text::Clause;

/// A request's audio state between steps: it travels with the job, so
/// resampling and framing continue seamlessly whichever thread runs the
/// next step.
pub(super) struct AudioState {
    pub(super) resampler: Resampler,
    pub(super) framer: Framer,
    pub(super) gain: f32,
    /// 48 kHz samples produced so far.
    pub(super) samples: u64,
    pub(super) fault: Option<AudioFault>,
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
pub(super) fn audio_fault(fault: Fault) -> Option<AudioFault> {
    match fault {
        Fault::Clipping { from_ms, len_ms } => Some(AudioFault::Clipping { from_ms, len_ms }),
        Fault::DcOffset { offset } => Some(AudioFault::DcOffset(offset)),
        Fault::DeadAir { from_ms, len_ms } => Some(AudioFault::Dropout { from_ms, len_ms }),
        _ => None,
    }
}

/// One request's work, owned by the scheduler between steps.
pub(super) struct Job {
    pub(super) voice: usize,
    /// Whether the voice streams inside a clause (one window per step).
    pub(super) streaming: bool,
    /// The request's id (what a stalled thread reports it holds).
    pub(super) request: Arc<str>,
    /// When the request arrived.
    pub(super) arrival: Instant,
    /// How every clause of it is spoken.
    pub(super) speech: Speech,
    /// Clauses not started.
    pub(super) clauses: VecDeque<Clause>,
    /// The clause in progress (`Done` between clauses).
    pub(super) clause: ClauseState,
    /// Characters of the clause in progress.
    pub(super) clause_chars: usize,
    /// Characters of the clauses not started.
    pub(super) chars_left: usize,
    pub(super) audio: Box<AudioState>,
    /// Its frames on their way to the pacer.
    pub(super) queue: FrameQueue,
    /// Samples (at the voice's rate) emitted so far.
    pub(super) native: u64,
    /// Where the clause in progress starts, in those samples.
    pub(super) clause_start: u64,
    /// Words placed but not yet attached to a frame.
    pub(super) words: Vec<tts_proto::v1::Word>,
}

impl Job {
    pub(super) fn finished(&self) -> bool {
        self.clause.is_done() && self.clauses.is_empty()
    }

    /// Audio seconds the next step produces, when known: a streaming
    /// clause's next window, or a streaming voice's next clause's first
    /// step; `None` (the largest step) for other engines.
    fn next_step_audio(&self, rate: u32) -> Option<f64> {
        match (&self.clause, self.clause.next_window_samples()) {
            (_, Some(samples)) if samples > 0 => Some(samples as f64 / f64::from(rate)),
            (ClauseState::Done, _) if self.streaming => Some(crate::sched::FIRST_STEP_AUDIO),
            _ => None,
        }
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

/// What the warm-up speaks.
const WARM_UP_PHRASE: &str =
    "This phrase warms the voice up, so that its first requests find it ready.";

fn warm_up_clause() -> Clause {
    Clause {
        text: WARM_UP_PHRASE.into(),
        terminator: Some('.'),
    }
}

/// What one thread owns: a synthesiser per voice and a scratch buffer.
pub(super) struct SynthThread {
    /// Its index among the pool's threads.
    index: usize,
    /// The voices' names, by index.
    names: Vec<String>,
    synthesizers: Vec<Box<dyn Synthesizer>>,
    /// By voice: whether steps of several streams may run together (the
    /// voice streams inside clauses, so its steps are decoder windows).
    batchable: Vec<bool>,
    /// Most steps one call runs.
    batch: usize,
    resampled: Vec<f32>,
}

/// Starts synthesis thread `index`: it builds its synthesisers and warms
/// them up, reports that on `ready`, then serves steps until the pool
/// closes. It drops `exit` as it ends.
pub(super) fn spawn(
    index: usize,
    voices: Vec<Arc<dyn Voice>>,
    shared: Arc<Shared>,
    batch: usize,
    ready: SyncSender<Result<Vec<Measured>, EngineError>>,
    exit: SyncSender<Infallible>,
) -> Result<JoinHandle<()>, EngineError> {
    std::thread::Builder::new()
        .name(format!("synth-{index}"))
        .spawn(move || {
            let _exit = exit;
            match SynthThread::new(index, &voices, batch) {
                Ok(mut t) => {
                    let _ = ready.send(t.warm_up(&voices));
                    drop(ready);
                    t.serve(&shared);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })
        .map_err(|e| EngineError::Runtime(format!("spawning a synthesis thread: {e}")))
}

impl SynthThread {
    pub(super) fn new(
        index: usize,
        voices: &[Arc<dyn Voice>],
        batch: usize,
    ) -> Result<Self, EngineError> {
        let synthesizers = voices
            .iter()
            .map(|v| v.synthesizer())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            index,
            names: voices.iter().map(|v| v.info().name.clone()).collect(),
            synthesizers,
            batchable: voices.iter().map(|v| v.info().streaming).collect(),
            batch: batch.max(1),
            resampled: Vec::new(),
        })
    }

    /// Speaks a phrase of a typical clause's length twice with every voice
    /// (the first run sets up the runtime's buffers) and measures the
    /// second: the voice's start-up cost estimate (a short phrase, mostly
    /// text part, overstated it by a fifth). With batching, it then sweeps
    /// each batchable voice's calls ([`Self::sweep`]).
    pub(super) fn warm_up(
        &mut self,
        voices: &[Arc<dyn Voice>],
    ) -> Result<Vec<Measured>, EngineError> {
        let speech = Speech::default();
        let mut measured = Vec::new();
        for (v, voice) in voices.iter().enumerate() {
            let synth = &mut self.synthesizers[v];
            let mut samples = 0usize;
            synth.synthesize(&speech, &warm_up_clause(), &mut |_| true)?;
            let started = Instant::now();
            synth.synthesize(&speech, &warm_up_clause(), &mut |s| {
                samples += s.len();
                true
            })?;
            let compute = started.elapsed().as_secs_f64();
            let rate = f64::from(voice.info().sample_rate.max(1));
            let sweep = if self.batch > 1 && self.batchable[v] {
                self.sweep(v, rate)?
            } else {
                Sweep::default()
            };
            measured.push(Measured {
                compute,
                audio: samples as f64 / rate,
                chars: WARM_UP_PHRASE.len() as f64,
                sweep,
            });
        }
        Ok(measured)
    }

    /// Speaks the phrase as batches of 1, 2, 4, … streams up to a full
    /// batch, step by step, and times each call after the first (which
    /// sets up the runtime's buffers for its batch). Anchors the voice's
    /// call model. (With constant shapes every shape's session exists
    /// before: none is made inside a timed call.)
    fn sweep(&mut self, voice: usize, rate: f64) -> Result<Sweep, EngineError> {
        let synth = &mut self.synthesizers[voice];
        let speech = Speech::default();
        let (mut calls, mut audio, mut steps) = (Vec::new(), 0usize, 0usize);
        // Every power of two up to the batch, and the batch: with constant
        // shapes, each batch size a call pads to has its sessions made
        // here, before the worker reports SERVING.
        let sizes = std::iter::successors(Some(1), |&b| (b * 2 < self.batch).then_some(b * 2))
            .chain([self.batch]);
        for b in sizes {
            let mut states: Vec<ClauseState> = (0..b)
                .map(|_| ClauseState::Pending(warm_up_clause()))
                .collect();
            for round in 0.. {
                let mut live: Vec<(&Speech, &mut ClauseState)> = states
                    .iter_mut()
                    .filter(|s| !s.is_done())
                    .map(|s| (&speech, s))
                    .collect();
                if live.is_empty() {
                    break;
                }
                let n = live.len();
                let mut made = 0usize;
                let started = Instant::now();
                for outcome in synth.step_many(&mut live, &mut |_, s| made += s.len()) {
                    outcome?;
                }
                if round > 0 {
                    calls.push((n, started.elapsed().as_secs_f64()));
                    audio += made;
                    steps += n;
                }
            }
        }
        Ok(Sweep {
            calls,
            audio: audio as f64 / rate,
            steps: steps as f64,
        })
    }

    pub(super) fn serve(&mut self, shared: &Shared) {
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
                    let State {
                        streams, estimates, ..
                    } = &mut *state;
                    let fit = estimates.get(lead.job.voice).map(|e| e.calls.fit());
                    let call = |n: usize| {
                        Duration::from_secs_f64(fit.map_or(0.0, |f| f.predict(n)).max(0.0))
                    };
                    let mut steps = streams.companions(
                        &mut lead,
                        now,
                        |a, b| a.voice == b.voice && batchable.get(a.voice) == Some(&true),
                        call,
                    );
                    steps.insert(0, lead);
                    drop(state);
                    worked = true;
                    let (done, call) = self.run(steps, shared);
                    state = shared.lock();
                    call.settle(&mut state);
                    for done in done {
                        done.settle(&mut state);
                    }
                    state.publish_load();
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
    /// back, one for each, with what the call cost.
    fn run(&mut self, steps: Vec<Step<Job>>, shared: &Shared) -> (Vec<Done>, Call) {
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
        let started = Instant::now();
        let results = self.steps(&mut jobs, wide, &shared.faults);
        shared.progress.end(self.index);
        let now = Instant::now();
        let call = Call {
            voice,
            steps: jobs.len(),
            took: now - started,
        };
        let done = jobs
            .into_iter()
            .zip(about)
            .zip(results)
            .map(|((job, (id, due, first)), result)| {
                metrics::step_finished(due, now);
                if first {
                    metrics::first_step(now.saturating_duration_since(job.arrival), batched);
                }
                Done { id, job, result }
            })
            .collect();
        (done, call)
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
        let (mut clauses, mut audio): (Vec<(&Speech, &mut ClauseState)>, Vec<&mut AudioState>) =
            jobs.iter_mut()
                .map(|j| ((&j.speech, &mut j.clause), &mut *j.audio))
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
            [(speech, state)] => vec![
                synth
                    .step(speech, state, wide, &mut |s| emit(0, s))
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
        // The pacer may be gone; the scheduler drops the job then.
        self.queue.push(frames, Instant::now());
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

/// One call of a voice's synthesiser: its steps and its time.
struct Call {
    voice: usize,
    steps: usize,
    took: Duration,
}

impl Call {
    /// Teaches the voice's call model, and exports the model's prediction
    /// beside what the call took.
    fn settle(self, state: &mut State) {
        let Some(estimate) = state.estimates.get_mut(self.voice) else {
            return;
        };
        let took = self.took.as_secs_f64();
        let predicted = estimate.calls.fit().predict(self.steps);
        if predicted > 0.0 {
            estimate.accuracy.add(took, predicted);
        }
        estimate.calls.observe(self.steps, took);
        metrics::call(&estimate.voice, took);
        if estimate.batch > 1 {
            metrics::call_model(
                &estimate.voice,
                estimate.calls.fit(),
                Some(estimate.accuracy.value()),
            );
            // Streams parked or held back keep their price until their
            // next step otherwise.
            state.reprice(self.voice, 0);
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
    pub(super) fn settle(self, state: &mut State) {
        let Self {
            id,
            mut job,
            result,
        } = self;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                job.queue.fail(e.into());
                state.remove(id);
                return;
            }
        };
        let estimate = &mut state.estimates[job.voice];
        estimate
            .cost
            .add(report.compute.as_secs_f64(), report.audio.max(1e-3));
        metrics::voice_cost(&estimate.voice, estimate.cost.value());
        estimate.step_audio.add(report.audio, 1.0);
        if let Some((audio, chars)) = report.clause
            && chars > 0
        {
            estimate.audio_per_char.add(audio, chars as f64);
        }
        // Frames held back (the queue was full) wait for the pacer to make
        // room: the stream runs no step until they are in. Trying again
        // here, under the lock, means a pacer that took frames while the
        // step ran cannot have missed waking the stream.
        let holding = !job.queue.flush();
        if job.finished() && !holding {
            // Dropping the job closes the pacer's queue: it sends what is
            // left and ends.
            state.remove(id);
            return;
        }
        let rate = job.audio.resampler.rate();
        let estimate = &state.estimates[job.voice];
        let demand = estimate.demand(
            job.remaining_audio(rate, estimate.audio_per_char.value()),
            job.next_step_audio(rate),
            state.streams.peers(job.voice),
        );
        let produced = job.audio.framer.frames_cut();
        // A job whose stream was removed meanwhile is dropped here.
        if state.streams.put_back(id, job, produced, demand).is_none() && holding {
            state.streams.block(id);
        }
    }
}
