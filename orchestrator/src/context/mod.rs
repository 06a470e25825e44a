//! Streamed text input: a context is one request whose text arrives in
//! pieces (`append`), for a client that speaks a language model's output
//! while it is still being written.
//!
//! The context cuts clauses as soon as they are complete (a sentence end,
//! a clause mark in a long sentence, a long run without either, a `flush`,
//! `close`, or a pause in the text longer than the idle limit) and has the
//! worker speak them one after another, each through an ordinary relay
//! (the same verification, timeouts and trace ids). The next clause starts
//! when the worker has sent the last frame of the one before, which on the
//! real-time clock is about a second (the worker's send-ahead) before that
//! frame is due to play, so consecutive clauses play without a gap.
//!
//! The clauses' audio is joined sample-exactly: the context re-frames it
//! into 20 ms frames of its own (one sequence, one checksum per frame,
//! one encoder for the client's format), so no padding is inserted at a
//! clause boundary. Only a `flush` (or the end) pads the frame in progress.

mod reframe;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tts_frame::{FRAME_SAMPLES, FrameHeader, PAYLOAD_BYTES};

use crate::metrics;
use crate::protocol::{Cutter, ErrorCode, ServerMessage, WordTiming};
use crate::queue::{Outgoing, Queued, enqueue};
use crate::relay::{RelayContext, relay};
use crate::request::Request;
use crate::stop::{Stop, StopReason};
use crate::transcode::Transcoder;
use reframe::Reframer;

/// What a client sends into a context.
#[derive(Debug)]
pub(crate) enum Piece {
    /// More text.
    Text(String),
    /// Speak what is buffered now.
    Flush,
    /// No more text.
    Close,
}

/// A context with no piece for this long is closed as if `close` had come
/// (so that an abandoned context does not hold its slot).
const ABANDONED: Duration = Duration::from_secs(30);
/// Frames a clause's relay may queue ahead of the context.
const CLAUSE_QUEUE: usize = 8;

/// A clause being spoken.
struct Running {
    task: JoinHandle<String>,
    frames: mpsc::Receiver<Outgoing>,
    stop: Stop,
}

/// One context's state.
struct Context {
    ctx: Arc<RelayContext>,
    req: Request,
    out: mpsc::Sender<Outgoing>,
    stop: Stop,
    cutter: Cutter,
    /// Clauses waiting, with when they became complete.
    queue: VecDeque<(String, Instant)>,
    running: Option<Running>,
    reframer: Reframer,
    transcoder: Option<Transcoder>,
    sequence: u32,
    started: bool,
    closed: bool,
    /// A flush waits for the clauses it cut to be spoken.
    flush_after: Option<usize>,
    clauses_done: usize,
    clauses_queued: usize,
    /// When the first clause became complete (for the first-audio metric).
    first_clause_at: Option<Instant>,
    /// Where the clause being spoken starts in the context's audio (48 kHz
    /// samples), known at its first output.
    clause_offset: Option<u64>,
}

/// How a context ended.
enum Ending {
    Completed,
    Cancelled,
    Failed(ServerMessage),
    Disconnected,
}

/// Runs a context until it is closed and spoken, cancelled or failed.
/// Sends exactly one of `end` or `error` for it (as a request does).
pub(crate) async fn context(
    ctx: Arc<RelayContext>,
    req: Request,
    mut pieces: mpsc::Receiver<Piece>,
    out: mpsc::Sender<Outgoing>,
    idle: Duration,
) -> String {
    let transcoder = Transcoder::new(req.options.format, ctx.opus_bitrate).ok();
    let mut c = Context {
        ctx,
        stop: req.stop.clone(),
        req,
        out,
        cutter: Cutter::default(),
        queue: VecDeque::new(),
        running: None,
        reframer: Reframer::default(),
        transcoder,
        sequence: 0,
        started: false,
        closed: false,
        flush_after: None,
        clauses_done: 0,
        clauses_queued: 0,
        first_clause_at: None,
        clause_offset: None,
    };
    let ending = c.run(&mut pieces, idle).await;
    c.finish(ending).await
}

impl Context {
    async fn run(&mut self, pieces: &mut mpsc::Receiver<Piece>, idle: Duration) -> Ending {
        let stop = self.stop.clone();
        let mut last_piece = tokio::time::Instant::now();
        loop {
            if self.closed && self.queue.is_empty() && self.running.is_none() {
                return self.last_frame().await;
            }
            let waiting_text = !self.cutter.is_empty() && !self.closed;
            tokio::select! {
                biased;
                _ = stop.stopped() => return self.stopped().await,
                item = next_frame(&mut self.running) => match item {
                    Some(item) => {
                        if let Some(ending) = self.on_clause_output(item).await {
                            return ending;
                        }
                    }
                    None => {
                        // The clause's relay ended (its end or error came first).
                        self.running = None;
                        self.clauses_done += 1;
                        if let Some(ending) = self.after_clause().await {
                            return ending;
                        }
                    }
                },
                piece = pieces.recv(), if !self.closed => {
                    last_piece = tokio::time::Instant::now();
                    match piece {
                        Some(Piece::Text(text)) => {
                            self.cutter.push(&text);
                            for clause in self.cutter.complete() {
                                self.queue_clause(clause);
                            }
                        }
                        Some(Piece::Flush) => {
                            if let Some(rest) = self.cutter.rest() {
                                self.queue_clause(rest);
                            }
                            self.flush_after = Some(self.clauses_queued);
                            if let Some(ending) = self.after_clause().await {
                                return ending;
                            }
                        }
                        Some(Piece::Close) | None => {
                            if let Some(rest) = self.cutter.rest() {
                                self.queue_clause(rest);
                            }
                            self.closed = true;
                            self.refuse_late(pieces).await;
                        }
                    }
                    self.start_next();
                }
                _ = tokio::time::sleep_until(last_piece + ABANDONED), if !self.closed => {
                    info!(request_id = %self.req.ids.request_id, trace_id = %self.req.ids.trace_id,
                        session_id = %self.req.ids.session_id, "context abandoned: closed");
                    if let Some(rest) = self.cutter.rest() {
                        self.queue_clause(rest);
                    }
                    self.closed = true;
                    self.refuse_late(pieces).await;
                    self.start_next();
                }
                _ = tokio::time::sleep_until(last_piece + idle), if waiting_text => {
                    // Text without an ending, and nothing more for a while.
                    if let Some(rest) = self.cutter.rest() {
                        self.queue_clause(rest);
                    }
                    self.start_next();
                }
            }
        }
    }

    /// After `close`: later pieces are refused with an error each, not
    /// lost (those already waiting here, and, once the channel is closed,
    /// those the connection tries to hand on).
    async fn refuse_late(&mut self, pieces: &mut mpsc::Receiver<Piece>) {
        pieces.close();
        while let Ok(piece) = pieces.try_recv() {
            let what = match piece {
                Piece::Text(_) => "append",
                Piece::Flush => "flush",
                Piece::Close => "close",
            };
            let message = format!("{what}: context {:?} is closed", self.req.ids.request_id);
            let error = self.error(ErrorCode::BadRequest, message);
            metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
            let queued = enqueue(
                &self.out,
                Outgoing::Message(error),
                &self.stop,
                self.ctx.stalled_timeout,
            )
            .await;
            if !matches!(queued, Queued::Sent { .. }) {
                return;
            }
        }
    }

    fn queue_clause(&mut self, clause: String) {
        let now = Instant::now();
        self.first_clause_at.get_or_insert(now);
        self.clauses_queued += 1;
        self.queue.push_back((clause, now));
    }

    /// Starts the next clause if none is being spoken.
    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some((text, _)) = self.queue.pop_front() else {
            return;
        };
        let (tx, rx) = mpsc::channel(CLAUSE_QUEUE);
        let clause = self.req.clause();
        let stop = clause.stop.clone();
        let task = tokio::spawn(relay(Arc::clone(&self.ctx), clause, text, tx));
        self.clause_offset = None;
        self.running = Some(Running {
            task,
            frames: rx,
            stop,
        });
    }

    /// Where the clause being spoken starts in the context's audio: after
    /// every frame sent and the samples waiting for the next one.
    fn clause_offset(&mut self) -> u64 {
        let at = u64::from(self.sequence) * FRAME_SAMPLES as u64 + self.reframer.pending_samples();
        *self.clause_offset.get_or_insert(at)
    }

    /// A clause relay's message: its frames are joined into the context's.
    async fn on_clause_output(&mut self, item: Outgoing) -> Option<Ending> {
        let offset = self.clause_offset();
        match item {
            Outgoing::Message(ServerMessage::Words { words, .. }) => {
                // The clause's times are from its own start.
                let ms = |t: u32| {
                    let samples = offset + u64::from(t) * u64::from(tts_frame::SAMPLE_RATE) / 1000;
                    (samples * 1000 / u64::from(tts_frame::SAMPLE_RATE)) as u32
                };
                let words = ServerMessage::Words {
                    request_id: self.req.ids.request_id.clone(),
                    stream_id: self.req.stream_id,
                    words: words
                        .into_iter()
                        .map(|w| WordTiming {
                            start_ms: ms(w.start_ms),
                            end_ms: ms(w.end_ms),
                            word: w.word,
                        })
                        .collect(),
                };
                self.send(Outgoing::Message(words)).await
            }
            Outgoing::Message(ServerMessage::Start { voice, .. }) if !self.started => {
                self.started = true;
                let format = self.req.options.format;
                let start = ServerMessage::Start {
                    request_id: self.req.ids.request_id.clone(),
                    trace_id: self.req.ids.trace_id.clone(),
                    stream_id: self.req.stream_id,
                    voice,
                    sample_rate: format.sample_rate,
                    encoding: format.encoding.as_str().to_owned(),
                    frame_samples: format.frame_samples() as u32,
                };
                if let Some(ending) = self.send(Outgoing::Message(start)).await {
                    return Some(ending);
                }
                metrics::first_audio(self.req.received.elapsed());
                if let Some(at) = self.first_clause_at {
                    metrics::context_first_audio(at.elapsed());
                }
                None
            }
            Outgoing::Frame {
                header,
                payload,
                samples,
                received,
                ..
            } => {
                let mut frames = Vec::new();
                self.reframer.push(&payload, samples as usize, &mut frames);
                for frame in frames {
                    if let Some(e) = self
                        .emit(frame, FRAME_SAMPLES, false, header.worker_ts_us, received)
                        .await
                    {
                        return Some(e);
                    }
                }
                None
            }
            Outgoing::Failed { error, .. } => Some(Ending::Failed(error)),
            Outgoing::Message(_) | Outgoing::End { .. } | Outgoing::Close(_) => None,
        }
    }

    /// After a clause: the next one, or a flush's padded frame.
    async fn after_clause(&mut self) -> Option<Ending> {
        self.start_next();
        let flushed = self
            .flush_after
            .is_some_and(|n| self.clauses_done >= n && self.running.is_none());
        if flushed {
            self.flush_after = None;
            if let Some((frame, real)) = self.reframer.flush() {
                return self
                    .emit(frame, real, false, tts_frame::now_us(), Instant::now())
                    .await;
            }
        }
        None
    }

    /// The context's last frame: what is left, padded, flagged last (an
    /// empty frame when nothing is left, so that a last flag is always sent
    /// once audio was).
    async fn last_frame(&mut self) -> Ending {
        if !self.started {
            // Nothing was ever spoken: `end` with no frames.
            return Ending::Completed;
        }
        let (frame, real) = self
            .reframer
            .flush()
            .unwrap_or_else(|| (Bytes::from(vec![0; PAYLOAD_BYTES]), 0));
        match self
            .emit(frame, real, true, tts_frame::now_us(), Instant::now())
            .await
        {
            Some(ending) => ending,
            None => Ending::Completed,
        }
    }

    /// Queues one frame of the context's own for the client.
    async fn emit(
        &mut self,
        pcm: Bytes,
        real: usize,
        last: bool,
        worker_ts_us: u64,
        received: Instant,
    ) -> Option<Ending> {
        let (payload, samples) = match self.transcoder.as_mut() {
            Some(t) => match t.convert(pcm, real as u32) {
                Ok(converted) => converted,
                Err(e) => {
                    let message = format!("frame {} could not be encoded: {e}", self.sequence);
                    return Some(Ending::Failed(self.error(ErrorCode::Internal, message)));
                }
            },
            None => {
                let message = "the requested format could not be set up".to_owned();
                return Some(Ending::Failed(self.error(ErrorCode::Internal, message)));
            }
        };
        metrics::payload_sent(
            self.req.options.format.encoding,
            self.req.api.as_str(),
            payload.len(),
        );
        let header = FrameHeader {
            stream_id: self.req.stream_id,
            sequence: self.sequence,
            crc32c: tts_frame::checksum(&payload),
            last,
            worker_ts_us,
            orchestrator_ts_us: 0,
        };
        self.sequence += 1;
        let frame = Outgoing::Frame {
            header,
            payload,
            samples,
            received,
            cancelled: self.stop.token(),
        };
        self.send(frame).await
    }

    /// Queues an item for the client on the same terms as a request's
    /// (see [`enqueue`]); `None` once it is queued.
    async fn send(&mut self, item: Outgoing) -> Option<Ending> {
        let stalled = self.ctx.stalled_timeout;
        match enqueue(&self.out, item, &self.stop, stalled).await {
            Queued::Sent { .. } => None,
            Queued::Stopped => Some(self.stopped().await),
            Queued::Stalled => Some(Ending::Failed(self.error(
                ErrorCode::ClientTooSlow,
                format!("the client took none of the context's audio for {stalled:?}"),
            ))),
            Queued::Gone => Some(Ending::Disconnected),
        }
    }

    fn error(&self, code: ErrorCode, message: String) -> ServerMessage {
        ServerMessage::error(code, message, Some(self.req.ids.request_id.clone()))
    }

    /// The context was stopped from outside: stop its clause too.
    async fn stopped(&mut self) -> Ending {
        let reason = self.stop.reason().unwrap_or(StopReason::Cancelled);
        if let Some(running) = self.running.take() {
            running.stop.stop(reason.clone());
            let _ = running.task.await;
        }
        match reason {
            StopReason::Cancelled => Ending::Cancelled,
            StopReason::Disconnected => Ending::Disconnected,
            StopReason::Failed(code, message) => Ending::Failed(self.error(code, message)),
        }
    }

    /// Counts the context and sends its `end` or `error`.
    async fn finish(mut self, ending: Ending) -> String {
        if let Some(running) = self.running.take() {
            running.stop.stop(StopReason::Cancelled);
            running.task.abort();
        }
        let ids = (
            &self.req.ids.request_id,
            &self.req.ids.trace_id,
            &self.req.ids.session_id,
        );
        let last = match &ending {
            Ending::Completed | Ending::Cancelled => {
                let cancelled = matches!(ending, Ending::Cancelled);
                let outcome = if cancelled {
                    crate::protocol::Outcome::Cancelled
                } else {
                    crate::protocol::Outcome::Completed
                };
                metrics::request_finished(outcome, None);
                info!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                    clauses = self.clauses_done, frames = self.sequence, cancelled,
                    "context finished");
                Some(Outgoing::End {
                    request_id: self.req.ids.request_id.clone(),
                    stream_id: self.req.stream_id,
                    cancelled,
                })
            }
            Ending::Failed(error) => {
                let code = match error {
                    ServerMessage::Error { code, .. } => *code,
                    _ => ErrorCode::Internal,
                };
                metrics::request_finished(code.outcome(), Some(code));
                warn!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                    code = code.as_str(), "context failed");
                let error = match error {
                    ServerMessage::Error {
                        code,
                        message,
                        retry_after_ms,
                        ..
                    } => ServerMessage::Error {
                        code: *code,
                        message: message.clone(),
                        request_id: Some(self.req.ids.request_id.clone()),
                        retry_after_ms: *retry_after_ms,
                    },
                    other => other.clone(),
                };
                Some(Outgoing::Failed {
                    stream_id: self.req.stream_id,
                    error,
                })
            }
            Ending::Disconnected => {
                metrics::request_finished(crate::protocol::Outcome::Disconnected, None);
                None
            }
        };
        if let Some(last) = last
            && tokio::time::timeout(Duration::from_secs(2), self.out.send(last))
                .await
                .is_err()
        {
            metrics::messages_dropped("last");
        }
        std::mem::take(&mut self.req.ids.request_id)
    }
}

/// The running clause's next message; `None` once its relay is done.
/// Pending forever when no clause is running.
async fn next_frame(running: &mut Option<Running>) -> Option<Outgoing> {
    match running {
        Some(r) => r.frames.recv().await,
        None => std::future::pending().await,
    }
}
