//! Synthesis: a fixed pool of threads that synthesise one clause at a time,
//! and one async pump per request that feeds them and streams the frames.
//!
//! Requests take turns clause by clause (the pool's queue is FIFO), so one
//! long text never holds a thread while others wait. A thread never blocks
//! on the network: it hands a clause's frames back to the request's pump,
//! which sends them into the request's bounded channel. The pump asks for
//! the next clause before sending the current one's frames, so synthesis
//! runs at most one clause ahead of what the reader has taken: a slow
//! reader stops its own synthesis, not anyone else's.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
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
    /// Cancelled when the request is gone: skip the work.
    cancelled: CancellationToken,
    queued_at: Instant,
    reply: oneshot::Sender<ClauseDone>,
}

/// A synthesised clause: its frames, and the audio state for the next one.
struct ClauseDone {
    audio: Box<AudioState>,
    frames: Result<Vec<Frame>, EngineError>,
}

/// The synthesis threads and the admission limit.
pub struct SynthPool {
    queue: Mutex<Sender<ClauseJob>>,
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
        let (tx, rx) = channel::<ClauseJob>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = channel();
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
        Ok(Arc::new(Self {
            queue: Mutex::new(tx),
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
        tokio::spawn(pump(Arc::clone(self), permit, voice, clauses, ids, frames));
        Ok(())
    }

    fn enqueue(&self, job: ClauseJob) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // The threads only stop when the pool is dropped, and the pool
        // outlives every pump (each holds an Arc): sending cannot fail. If
        // it did, the dropped reply tells the pump.
        let _ = queue.send(job);
    }
}

/// Drives one request: clause jobs out, frames into the request's channel.
async fn pump(
    pool: Arc<SynthPool>,
    _permit: OwnedSemaphorePermit,
    voice: usize,
    clauses: Vec<Clause>,
    ids: RequestIds,
    tx: mpsc::Sender<Result<AudioFrame, Status>>,
) {
    let _inflight = metrics::InflightGuard::new();
    let cancelled = CancellationToken::new();
    let _cancel_queued_work = cancelled.clone().drop_guard();
    let info = pool.voices[voice].info();
    let audio = match Resampler::new(info.sample_rate) {
        Ok(resampler) => Box::new(AudioState {
            resampler,
            framer: Framer::default(),
            gain: info.gain,
        }),
        Err(e) => {
            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            return;
        }
    };
    let count = clauses.len();
    let mut clauses = clauses.into_iter().enumerate();
    let submit = |audio: Box<AudioState>, (i, clause): (usize, Clause)| {
        let (reply, done) = oneshot::channel();
        pool.enqueue(ClauseJob {
            voice,
            clause,
            last: i + 1 == count,
            audio,
            cancelled: cancelled.clone(),
            queued_at: Instant::now(),
            reply,
        });
        done
    };
    let Some(first) = clauses.next() else { return };
    let mut pending = Some(submit(audio, first));
    let mut validator = Validator::new();
    let mut sent = 0u32;
    while let Some(done) = pending.take() {
        let done = tokio::select! {
            done = done => done,
            _ = tx.closed() => return,
        };
        let Ok(ClauseDone { audio, frames }) = done else {
            return;
        };
        let frames = match frames {
            Ok(frames) => frames,
            Err(e) => {
                warn!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                    session_id = %ids.session_id, error = %e, "synthesis failed");
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        // Ask for the next clause before sending this one's frames.
        pending = clauses.next().map(|next| submit(audio, next));
        for mut frame in frames {
            let outcome = validator.check(frame.sequence, frame.crc32c, &frame.payload);
            metrics::frame_validated(&outcome);
            if pool.fault_corrupt_frame == Some(frame.sequence) {
                frame.payload[100] ^= 0x5A;
            }
            if !send(&tx, to_message(frame)).await {
                debug!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                    session_id = %ids.session_id, "receiver gone; synthesis stopped");
                return;
            }
            sent += 1;
        }
    }
    if sent == 0 {
        let status = Status::invalid_argument("the text produced no audio");
        let _ = tx.send(Err(coded(status, "empty_text"))).await;
    }
}

/// Sends one frame, waiting while the queue is full; false once the
/// receiver is gone.
async fn send(tx: &mpsc::Sender<Result<AudioFrame, Status>>, frame: AudioFrame) -> bool {
    metrics::frame_enqueued(tx.max_capacity() - tx.capacity());
    if tx.capacity() > 0 {
        return tx.send(Ok(frame)).await.is_ok();
    }
    let waiting = Instant::now();
    let sent = tx.send(Ok(frame)).await.is_ok();
    metrics::backpressure(waiting.elapsed());
    sent
}

fn to_message(frame: Frame) -> AudioFrame {
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

/// What one thread owns: a synthesiser per voice and scratch buffers.
struct SynthThread {
    synthesizers: Vec<Box<dyn Synthesizer>>,
    native: Vec<f32>,
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
            native: Vec::new(),
            resampled: Vec::new(),
        })
    }

    fn serve(&mut self, queue: &Mutex<Receiver<ClauseJob>>) {
        loop {
            // The lock is held only while waiting for the next job.
            let job = match queue.lock() {
                Ok(rx) => rx.recv(),
                Err(poisoned) => poisoned.into_inner().recv(),
            };
            let Ok(mut job) = job else { return };
            if job.cancelled.is_cancelled() {
                continue;
            }
            metrics::synthesis_queue_wait(job.queued_at.elapsed());
            let frames = self.run(&mut job);
            let _ = job.reply.send(ClauseDone {
                audio: job.audio,
                frames,
            });
        }
    }

    /// Synthesises one clause and cuts what it adds into frames.
    fn run(&mut self, job: &mut ClauseJob) -> Result<Vec<Frame>, EngineError> {
        let synth = self
            .synthesizers
            .get_mut(job.voice)
            .ok_or_else(|| EngineError::Runtime(format!("no voice #{}", job.voice)))?;
        let _busy = metrics::SynthesisGuard::new();
        let audio = &mut *job.audio;
        self.native.clear();
        let started = Instant::now();
        synth.synthesize(&job.clause, &mut self.native)?;
        metrics::clause_synthesized(started.elapsed(), self.native.len(), audio.resampler.rate());
        self.resampled.clear();
        audio.resampler.process(&self.native, &mut self.resampled);
        if job.last {
            audio.resampler.finish(&mut self.resampled);
        }
        let gain = audio.gain;
        let mut frames = Vec::with_capacity(self.resampled.len() / tts_frame::FRAME_SAMPLES + 1);
        audio
            .framer
            .push(self.resampled.iter().map(|&s| to_s16(s, gain)), &mut frames);
        if job.last {
            frames.extend(audio.framer.finish());
        }
        Ok(frames)
    }
}
