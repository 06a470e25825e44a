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

mod output;
mod reframe;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use crate::frame::{Failure, Item};
use crate::metrics;
use crate::protocol::{Cutter, ErrorCode, Outcome};
use crate::queue::{FrameQueue, FrameReceiver, Queued, frame_queue};
use crate::relay::{Ended, RelayContext, relay};
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
/// How long a context's last message (`end` or `error`) may wait for room
/// in its connection's queue before it is dropped (and counted).
const LAST_MESSAGE_LIMIT: Duration = Duration::from_secs(2);

/// A clause being spoken.
struct Running {
    task: JoinHandle<Ended>,
    frames: FrameReceiver,
    stop: Stop,
}

/// One context's state.
struct Context {
    ctx: Arc<RelayContext>,
    req: Request,
    out: FrameQueue,
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
    Failed(Failure),
    Disconnected,
}

/// Runs a context until it is closed and spoken, cancelled or failed,
/// inside its span (its lines carry its ids from there; each clause's
/// relay has a span of its own within it). Sends exactly one of `end` or
/// `error` for it (as a request does).
pub(crate) async fn context(
    ctx: Arc<RelayContext>,
    req: Request,
    pieces: mpsc::Receiver<Piece>,
    out: FrameQueue,
    idle: Duration,
) -> Ended {
    let span = req.span.clone();
    let request_id = speak(ctx, req, pieces, out, idle).instrument(span).await;
    Ended {
        request_id,
        retry_after: None,
    }
}

/// The context's work, from its first piece to its last message.
async fn speak(
    ctx: Arc<RelayContext>,
    req: Request,
    mut pieces: mpsc::Receiver<Piece>,
    out: FrameQueue,
    idle: Duration,
) -> String {
    let transcoder = Transcoder::new(req.options.format, ctx.opus_bitrate).ok();
    let mut c = Context {
        ctx,
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
        let stop = self.req.stop.clone();
        let mut last_piece = tokio::time::Instant::now();
        loop {
            if self.closed && self.queue.is_empty() && self.running.is_none() {
                return self.last_frame().await;
            }
            let waiting_text = !self.cutter.is_empty() && !self.closed;
            let ending = tokio::select! {
                biased;
                _ = stop.stopped() => return self.stopped().await,
                item = next_item(&mut self.running) => match item {
                    Some(item) => self.on_clause_output(item).await,
                    None => {
                        // The clause's relay ended (its end or error came first).
                        self.running = None;
                        self.clauses_done += 1;
                        self.after_clause().await
                    }
                },
                piece = pieces.recv(), if !self.closed => {
                    last_piece = tokio::time::Instant::now();
                    self.on_piece(piece, pieces).await
                }
                _ = tokio::time::sleep_until(last_piece + ABANDONED), if !self.closed => {
                    info!("context abandoned: closed");
                    self.close(pieces).await;
                    None
                }
                _ = tokio::time::sleep_until(last_piece + idle), if waiting_text => {
                    // Text without an ending, and nothing more for a while.
                    self.cut_rest();
                    self.start_next();
                    None
                }
            };
            if let Some(ending) = ending {
                return ending;
            }
        }
    }

    /// A piece from the client (`None`: the connection let go of the
    /// context, as a `close`).
    async fn on_piece(
        &mut self,
        piece: Option<Piece>,
        pieces: &mut mpsc::Receiver<Piece>,
    ) -> Option<Ending> {
        match piece {
            Some(Piece::Text(text)) => {
                self.cutter.push(&text);
                for clause in self.cutter.complete() {
                    self.queue_clause(clause);
                }
            }
            Some(Piece::Flush) => {
                self.cut_rest();
                self.flush_after = Some(self.clauses_queued);
                if let Some(ending) = self.after_clause().await {
                    return Some(ending);
                }
            }
            Some(Piece::Close) | None => {
                self.close(pieces).await;
                return None;
            }
        }
        self.start_next();
        None
    }

    /// No more text: what is buffered is the last clause.
    async fn close(&mut self, pieces: &mut mpsc::Receiver<Piece>) {
        self.cut_rest();
        self.closed = true;
        self.refuse_late(pieces).await;
        self.start_next();
    }

    /// Queues the text buffered without a clause ending, if any.
    fn cut_rest(&mut self) {
        if let Some(rest) = self.cutter.rest() {
            self.queue_clause(rest);
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
            metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
            let refused = Item::Refused {
                request_id: self.req.ids.request_id.clone(),
                failure: Failure::new(ErrorCode::BadRequest, message),
            };
            let stalled = self.ctx.stalled_timeout;
            let queued = self.out.send(refused, &self.req.stop, stalled).await;
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
        let (tx, rx) = frame_queue(CLAUSE_QUEUE, Arc::clone(&self.ctx.stats));
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

    /// The context was stopped from outside: stop its clause too.
    async fn stopped(&mut self) -> Ending {
        let reason = self.req.stop.reason().unwrap_or(StopReason::Cancelled);
        if let Some(running) = self.running.take() {
            running.stop.stop(reason.clone());
            let _ = running.task.await;
        }
        match reason {
            StopReason::Cancelled => Ending::Cancelled,
            StopReason::Disconnected => Ending::Disconnected,
            StopReason::Failed(code, message) => Ending::Failed(Failure::new(code, message)),
        }
    }

    /// Counts the context and sends its `end` or `error`.
    async fn finish(mut self, ending: Ending) -> String {
        if let Some(running) = self.running.take() {
            running.stop.stop(StopReason::Cancelled);
            running.task.abort();
        }
        if let Some(last) = self.last_item(ending)
            && !self.out.send_last(last, LAST_MESSAGE_LIMIT).await
        {
            metrics::messages_dropped("last");
        }
        std::mem::take(&mut self.req.ids.request_id)
    }

    /// The context's `end` or `error` (none when its client is gone),
    /// counted and logged.
    fn last_item(&self, ending: Ending) -> Option<Item> {
        let ids = &self.req.ids;
        match ending {
            Ending::Completed | Ending::Cancelled => {
                let cancelled = matches!(ending, Ending::Cancelled);
                let outcome = if cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Completed
                };
                metrics::request_finished(outcome, None);
                info!(
                    clauses = self.clauses_done,
                    frames = self.sequence,
                    cancelled,
                    "context finished"
                );
                Some(Item::End {
                    request_id: ids.request_id.clone(),
                    stream_id: self.req.stream_id,
                    cancelled,
                })
            }
            Ending::Failed(failure) => {
                let code = failure.code;
                metrics::request_finished(code.outcome(), Some(code));
                warn!(code = code.as_str(), "context failed");
                Some(Item::Failed {
                    request_id: ids.request_id.clone(),
                    stream_id: self.req.stream_id,
                    failure,
                })
            }
            Ending::Disconnected => {
                metrics::request_finished(Outcome::Disconnected, None);
                None
            }
        }
    }
}

/// The running clause's next item; `None` once its relay is done.
/// Pending forever when no clause is running.
async fn next_item(running: &mut Option<Running>) -> Option<Item> {
    match running {
        Some(r) => r.frames.recv().await,
        None => std::future::pending().await,
    }
}
