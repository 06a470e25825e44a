//! Synthesis: a fixed pool of threads that synthesise one clause at a time,
//! and one async pump per request that feeds them and streams the frames.
//!
//! Requests take turns clause by clause (first clauses of new requests
//! first, then later clauses in arrival order), so one long text never
//! holds a thread while others wait. A thread never blocks
//! on the network: it hands frames to the request's pump as the engine
//! produces them (window by window for streaming voices), and the pump
//! sends them into the request's bounded channel. The pump asks for the
//! next clause once fewer than [`LOOKAHEAD_FRAMES`] of its frames wait to
//! be sent, so synthesis runs at most one clause ahead of the reader: a
//! slow reader stops its own synthesis, not anyone else's, and a request
//! holds at most about one clause of frames in memory.

use std::collections::VecDeque;
use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, warn};
use tts_frame::Validator;
use tts_proto::v1::AudioFrame;

use crate::audio::{Frame, Framer, Resampler, to_s16};
use crate::engine::{EngineError, Synthesizer, Voice};
use crate::metrics;
use crate::service::coded;
use crate::text::Clause;

/// The next clause is requested once fewer frames than this (2 s of audio)
/// wait to be sent.
pub const LOOKAHEAD_FRAMES: usize = 100;

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
}

/// A request's audio state between clauses: it travels with each clause
/// job, so resampling and framing continue seamlessly across clauses
/// whichever thread synthesises the next one.
struct AudioState {
    resampler: Resampler,
    framer: Framer,
    gain: f32,
}

/// One clause to synthesise.
struct ClauseJob {
    voice: usize,
    clause: Clause,
    /// Flush the resampler and emit the last frame after this clause.
    last: bool,
    audio: Box<AudioState>,
    /// Cancelled when the request is gone: skip or stop the work.
    cancelled: CancellationToken,
    queued_at: Instant,
    events: mpsc::UnboundedSender<ClauseEvent>,
}

/// What a thread reports about a clause, in order.
enum ClauseEvent {
    /// Frames ready to send.
    Frames(Vec<Frame>),
    /// The clause is done (or failed); the audio state for the next one.
    Done {
        audio: Box<AudioState>,
        result: Result<(), EngineError>,
    },
}

/// The synthesis threads and the admission limit.
pub struct SynthPool {
    queue: Arc<JobQueue>,
    voices: Vec<Arc<dyn Voice>>,
    admitted: Arc<Semaphore>,
    max_requests: usize,
    /// Test hook: corrupt the frame with this sequence number after its
    /// checksum is computed.
    fault_corrupt_frame: Option<u32>,
}

impl SynthPool {
    /// Starts `threads` threads, each with its own synthesiser per voice
    /// (built before this returns; a failure is returned), admitting at most
    /// `max_requests` requests at once.
    pub fn start(
        voices: &[Arc<dyn Voice>],
        threads: usize,
        max_requests: usize,
        fault_corrupt_frame: Option<u32>,
    ) -> Result<Arc<Self>, EngineError> {
        let queue = Arc::new(JobQueue::default());
        let (ready_tx, ready_rx) = channel();
        for i in 0..threads {
            let voices: Vec<Arc<dyn Voice>> = voices.to_vec();
            let queue = Arc::clone(&queue);
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("synth-{i}"))
                .spawn(move || match SynthThread::new(&voices) {
                    Ok(mut t) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        t.serve(&queue);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| EngineError::Runtime(format!("spawning a synthesis thread: {e}")))?;
        }
        drop(ready_tx);
        for result in ready_rx.iter().take(threads) {
            result?;
        }
        Ok(Arc::new(Self {
            queue,
            voices: voices.to_vec(),
            admitted: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            fault_corrupt_frame,
        }))
    }

    /// Admits a request and starts streaming its frames into `frames`.
    /// Returns at once; the frames follow as clauses are synthesised.
    pub fn submit(
        self: &Arc<Self>,
        voice: usize,
        clauses: Vec<Clause>,
        ids: RequestIds,
        frames: mpsc::Sender<Result<AudioFrame, Status>>,
    ) -> Result<(), SubmitError> {
        let permit = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| SubmitError::Full(self.max_requests))?;
        let pump = Pump {
            pool: Arc::clone(self),
            _permit: permit,
            voice,
            ids,
            tx: frames,
            cancelled: CancellationToken::new(),
            validator: Validator::new(),
        };
        let span = tracing::info_span!("synthesize", request_id = %pump.ids.request_id,
            trace_id = %pump.ids.trace_id, session_id = %pump.ids.session_id);
        tts_telemetry::otel::link_trace(&span, &pump.ids.trace_id);
        tokio::spawn(tracing::Instrument::instrument(pump.run(clauses), span));
        Ok(())
    }

    fn enqueue(&self, job: ClauseJob, first: bool) {
        self.queue.push(job, first);
    }
}

impl Drop for SynthPool {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The pool's queue, in two lanes: the first clause of a request goes
/// ahead of later clauses of requests already playing (those have up to
/// [`LOOKAHEAD_FRAMES`] of audio queued), so that a new listener's first
/// audio does not wait behind everyone else's next sentence.
#[derive(Default)]
struct JobQueue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

#[derive(Default)]
struct Lanes {
    first: std::collections::VecDeque<ClauseJob>,
    later: std::collections::VecDeque<ClauseJob>,
    closed: bool,
}

impl JobQueue {
    fn push(&self, job: ClauseJob, first: bool) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if first {
            lanes.first.push_back(job);
        } else {
            lanes.later.push_back(job);
        }
        drop(lanes);
        self.ready.notify_one();
    }

    /// The next job, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<ClauseJob> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = lanes.first.pop_front().or_else(|| lanes.later.pop_front()) {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// Drives one request: clause jobs out, frames into the request's channel.
struct Pump {
    pool: Arc<SynthPool>,
    _permit: OwnedSemaphorePermit,
    voice: usize,
    ids: RequestIds,
    tx: mpsc::Sender<Result<AudioFrame, Status>>,
    cancelled: CancellationToken,
    validator: Validator,
}

impl Pump {
    async fn run(mut self, clauses: Vec<Clause>) {
        let _inflight = metrics::InflightGuard::new();
        let _stop_queued_work = self.cancelled.clone().drop_guard();
        let info = self.pool.voices[self.voice].info();
        let audio = match Resampler::new(info.sample_rate) {
            Ok(resampler) => Box::new(AudioState {
                resampler,
                framer: Framer::default(),
                gain: info.gain,
            }),
            Err(e) => {
                let _ = self.tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        let count = clauses.len();
        let mut clauses = clauses.into_iter().enumerate().peekable();
        let Some(first) = clauses.next() else { return };
        let mut events = Some(self.submit(audio, first, count));
        // The audio state, between a clause's end and the next one's start.
        let mut between: Option<Box<AudioState>> = None;
        let mut pending: VecDeque<Frame> = VecDeque::new();
        let mut sent = 0u32;
        let mut waiting_since: Option<Instant> = None;
        loop {
            if between.is_some()
                && pending.len() < LOOKAHEAD_FRAMES
                && let (Some(audio), Some(next)) = (between.take(), clauses.next())
            {
                events = Some(self.submit(audio, next, count));
            }
            if events.is_none() && pending.is_empty() && clauses.peek().is_none() {
                break;
            }
            if !pending.is_empty() && self.tx.capacity() == 0 {
                waiting_since.get_or_insert_with(Instant::now);
            }
            tokio::select! {
                biased;
                _ = self.tx.closed() => {
                    debug!(request_id = %self.ids.request_id, trace_id = %self.ids.trace_id,
                        session_id = %self.ids.session_id, "receiver gone; synthesis stopped");
                    return;
                }
                event = recv(&mut events), if events.is_some() => match event {
                    Some(ClauseEvent::Frames(frames)) => pending.extend(frames),
                    Some(ClauseEvent::Done { audio, result: Ok(()) }) => {
                        events = None;
                        between = Some(audio);
                    }
                    Some(ClauseEvent::Done { result: Err(e), .. }) => {
                        warn!(request_id = %self.ids.request_id, trace_id = %self.ids.trace_id,
                            session_id = %self.ids.session_id, error = %e, "synthesis failed");
                        let _ = self.tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                    // The job was dropped unrun: the request is going away.
                    None => return,
                },
                permit = self.tx.reserve(), if !pending.is_empty() => {
                    let Ok(permit) = permit else { return };
                    if let Some(since) = waiting_since.take() {
                        metrics::backpressure(since.elapsed());
                    }
                    if let Some(frame) = pending.pop_front() {
                        metrics::frame_enqueued(self.tx.max_capacity() - self.tx.capacity());
                        let fault = self.pool.fault_corrupt_frame;
                        permit.send(Ok(checked(&mut self.validator, fault, frame)));
                        sent += 1;
                    }
                }
            }
        }
        if sent == 0 {
            let status = Status::invalid_argument("the text produced no audio");
            let _ = self.tx.send(Err(coded(status, "empty_text"))).await;
        }
    }

    fn submit(
        &self,
        audio: Box<AudioState>,
        (i, clause): (usize, Clause),
        count: usize,
    ) -> mpsc::UnboundedReceiver<ClauseEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        let job = ClauseJob {
            voice: self.voice,
            clause,
            last: i + 1 == count,
            audio,
            cancelled: self.cancelled.clone(),
            queued_at: Instant::now(),
            events,
        };
        self.pool.enqueue(job, i == 0);
        rx
    }
}

/// Validates a frame before it leaves (and applies the fault hook).
fn checked(validator: &mut Validator, fault: Option<u32>, mut frame: Frame) -> AudioFrame {
    let outcome = validator.check(frame.sequence, frame.crc32c, &frame.payload);
    metrics::frame_validated(&outcome);
    if fault == Some(frame.sequence) {
        frame.payload[100] ^= 0x5A;
    }
    AudioFrame {
        sequence: frame.sequence,
        payload: frame.payload,
        crc32c: frame.crc32c,
        last: frame.last,
        worker_ts_us: 0,
        samples: frame.samples,
        voice: String::new(),
    }
}

async fn recv(events: &mut Option<mpsc::UnboundedReceiver<ClauseEvent>>) -> Option<ClauseEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What one thread owns: a synthesiser per voice and a scratch buffer.
struct SynthThread {
    synthesizers: Vec<Box<dyn Synthesizer>>,
    resampled: Vec<f32>,
}

impl SynthThread {
    fn new(voices: &[Arc<dyn Voice>]) -> Result<Self, EngineError> {
        let synthesizers = voices
            .iter()
            .map(|v| v.synthesizer())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            synthesizers,
            resampled: Vec::new(),
        })
    }

    fn serve(&mut self, queue: &JobQueue) {
        while let Some(mut job) = queue.pop() {
            if job.cancelled.is_cancelled() {
                continue;
            }
            metrics::synthesis_queue_wait(job.queued_at.elapsed());
            let result = self.run(&mut job);
            let _ = job.events.send(ClauseEvent::Done {
                audio: job.audio,
                result,
            });
        }
    }

    /// Synthesises one clause, sending its frames as they are cut.
    fn run(&mut self, job: &mut ClauseJob) -> Result<(), EngineError> {
        let _busy = metrics::SynthesisGuard::new();
        let synth = self
            .synthesizers
            .get_mut(job.voice)
            .ok_or_else(|| EngineError::Runtime(format!("no voice #{}", job.voice)))?;
        let (audio, resampled, events) = (&mut *job.audio, &mut self.resampled, &job.events);
        let gain = audio.gain;
        let mut native_samples = 0usize;
        let started = Instant::now();
        let mut emit = |samples: &[f32]| {
            native_samples += samples.len();
            resampled.clear();
            audio.resampler.process(samples, resampled);
            let mut frames = Vec::new();
            audio
                .framer
                .push(resampled.iter().map(|&s| to_s16(s, gain)), &mut frames);
            if !frames.is_empty() {
                let _ = events.send(ClauseEvent::Frames(frames));
            }
            !job.cancelled.is_cancelled()
        };
        synth.synthesize(&job.clause, &mut emit)?;
        metrics::clause_synthesized(started.elapsed(), native_samples, audio.resampler.rate());
        if job.last {
            resampled.clear();
            audio.resampler.finish(resampled);
            let mut frames = Vec::new();
            audio
                .framer
                .push(resampled.iter().map(|&s| to_s16(s, gain)), &mut frames);
            frames.extend(audio.framer.finish());
            if !frames.is_empty() {
                let _ = events.send(ClauseEvent::Frames(frames));
            }
        }
        Ok(())
    }
}
