//! The synthesis pool: a fixed number of threads, each owning one
//! synthesiser per voice, fed from a bounded queue of requests.
//!
//! A thread takes one request at a time and streams its frames into that
//! request's bounded channel. When the channel is full (the orchestrator
//! reads slowly) the thread waits; when the receiver is gone (cancelled,
//! disconnected) it stops at the next frame or clause.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, warn};
use tts_frame::Validator;
use tts_proto::v1::AudioFrame;

use crate::audio::{Frame, Framer, Resampler, to_s16};
use crate::engine::{EngineError, Synthesizer, Voice};
use crate::metrics;
use crate::text::Clause;

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

/// One request for the pool.
pub struct Job {
    /// What to say, already split.
    pub clauses: Vec<Clause>,
    /// Index of the voice in the pool's voice list.
    pub voice: usize,
    /// Where frames go; bounded.
    pub frames: mpsc::Sender<Result<AudioFrame, Status>>,
    /// For logs.
    pub ids: RequestIds,
    /// When the job was queued.
    pub queued_at: Instant,
}

/// Why a job was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full.
    #[error("synthesis queue is full")]
    Full,
    /// The pool has stopped.
    #[error("synthesis pool has stopped")]
    Closed,
}

/// Handle to the pool. Dropping it lets the threads finish their current
/// request and exit.
pub struct SynthPool {
    queue: SyncSender<Job>,
}

impl SynthPool {
    /// Starts `threads` threads with room for `queue` waiting jobs. Each
    /// thread builds its synthesisers first; a failure there is returned.
    pub fn start(
        voices: &[Arc<dyn Voice>],
        threads: usize,
        queue: usize,
    ) -> Result<Self, EngineError> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..threads {
            let voices: Vec<Arc<dyn Voice>> = voices.to_vec();
            let rx = Arc::clone(&rx);
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("synth-{i}"))
                .spawn(move || match SynthThread::new(&voices) {
                    Ok(mut t) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        t.serve(&rx);
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
        Ok(Self { queue: tx })
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }
}

/// What one thread owns: a synthesiser and a resampler per voice, and the
/// scratch buffers reused across requests.
struct SynthThread {
    lanes: Vec<(Box<dyn Synthesizer>, Resampler, f32)>,
    framer: Framer,
    native: Vec<f32>,
    resampled: Vec<f32>,
    frames: Vec<Frame>,
}

impl SynthThread {
    fn new(voices: &[Arc<dyn Voice>]) -> Result<Self, EngineError> {
        let mut lanes = Vec::with_capacity(voices.len());
        for voice in voices {
            let info = voice.info();
            let resampler = Resampler::new(info.sample_rate)
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            lanes.push((voice.synthesizer()?, resampler, info.gain));
        }
        Ok(Self {
            lanes,
            framer: Framer::default(),
            native: Vec::new(),
            resampled: Vec::new(),
            frames: Vec::new(),
        })
    }

    fn serve(&mut self, queue: &Mutex<Receiver<Job>>) {
        loop {
            // The lock is held only while waiting for the next job.
            let job = match queue.lock() {
                Ok(rx) => rx.recv(),
                Err(poisoned) => poisoned.into_inner().recv(),
            };
            let Ok(job) = job else { return };
            metrics::synthesis_queue_wait(job.queued_at.elapsed());
            let frames = job.frames.clone();
            let ids = job.ids.clone();
            match self.run(job) {
                Ok(Outcome::Completed) => {}
                Ok(Outcome::NoAudio) => {
                    let status = crate::service::coded(
                        Status::invalid_argument("the text produced no audio"),
                        "empty_text",
                    );
                    let _ = frames.blocking_send(Err(status));
                }
                Ok(Outcome::Abandoned) => {
                    debug!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                        session_id = %ids.session_id, "receiver gone; synthesis stopped");
                }
                Err(e) => {
                    warn!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                        session_id = %ids.session_id, error = %e, "synthesis failed");
                    let _ = frames.blocking_send(Err(Status::internal(e.to_string())));
                }
            }
        }
    }

    fn run(&mut self, job: Job) -> Result<Outcome, EngineError> {
        let Some((synth, resampler, gain)) = self.lanes.get_mut(job.voice) else {
            return Err(EngineError::Runtime(format!("no voice #{}", job.voice)));
        };
        let gain = *gain;
        resampler.reset();
        self.framer.reset();
        let mut sender = FrameSender::new(&job.frames);
        for clause in &job.clauses {
            if job.frames.is_closed() {
                return Ok(Outcome::Abandoned);
            }
            self.native.clear();
            let started = Instant::now();
            synth.synthesize(clause, &mut self.native)?;
            metrics::clause_synthesized(started.elapsed(), self.native.len(), resampler.rate());
            self.resampled.clear();
            resampler.process(&self.native, &mut self.resampled);
            self.framer.push(
                self.resampled.iter().map(|&s| to_s16(s, gain)),
                &mut self.frames,
            );
            if !sender.send_all(&mut self.frames) {
                return Ok(Outcome::Abandoned);
            }
        }
        self.resampled.clear();
        resampler.finish(&mut self.resampled);
        self.framer.push(
            self.resampled.iter().map(|&s| to_s16(s, gain)),
            &mut self.frames,
        );
        let Some(last) = self.framer.finish() else {
            return Ok(Outcome::NoAudio);
        };
        self.frames.push(last);
        if !sender.send_all(&mut self.frames) {
            return Ok(Outcome::Abandoned);
        }
        Ok(Outcome::Completed)
    }
}

enum Outcome {
    Completed,
    /// Every clause synthesised to nothing: no frame was produced.
    NoAudio,
    Abandoned,
}

/// Validates each frame and hands it to the request's channel.
struct FrameSender<'a> {
    tx: &'a mpsc::Sender<Result<AudioFrame, Status>>,
    validator: Validator,
}

impl<'a> FrameSender<'a> {
    fn new(tx: &'a mpsc::Sender<Result<AudioFrame, Status>>) -> Self {
        Self {
            tx,
            validator: Validator::new(),
        }
    }

    /// Sends and drains `frames`; false once the receiver is gone.
    fn send_all(&mut self, frames: &mut Vec<Frame>) -> bool {
        for frame in frames.drain(..) {
            let outcome = self
                .validator
                .check(frame.sequence, frame.crc32c, &frame.payload);
            metrics::frame_validated("worker", &outcome);
            let message = AudioFrame {
                sequence: frame.sequence,
                payload: frame.payload,
                crc32c: frame.crc32c,
                last: frame.last,
                worker_ts_us: 0,
                samples: frame.samples,
                voice: String::new(),
            };
            // Blocks while the channel is full: this is where backpressure
            // from a slow reader stops synthesis.
            if self.tx.blocking_send(Ok(message)).is_err() {
                return false;
            }
        }
        true
    }
}
