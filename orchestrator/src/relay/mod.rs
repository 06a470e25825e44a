//! One request's relay: calls the worker, verifies each frame, and queues
//! it for the client. Waiting on the connection's bounded queue is what
//! stops the orchestrator from reading the worker's stream when the client
//! is slow; HTTP/2 flow control then holds the worker.

pub(crate) mod grpc;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};
use tts_frame::{FrameError, FrameHeader, Tally, Validator};
use tts_proto::v1::AudioFrame;

use crate::cache::{PhraseCache, Recording, Replay};
use crate::metrics::{self, RelayStats};
use crate::pool::{Lease, NoWorker, Pool};
use crate::protocol::{Delivery, ErrorCode, Outcome, ServerMessage, WordTiming};
use crate::queue::{Outgoing, Queued, enqueue};
use crate::request::Request;
use crate::stop::{Stop, StopReason};
use crate::transcode::Transcoder;

/// How a request ended.
enum Ending {
    Completed,
    Cancelled,
    Failed(ErrorCode, String),
    /// The worker refused the request: admitted streams would be late.
    Refused {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The client's connection is gone; nothing more can be sent.
    Disconnected,
}

/// How a request stopped from outside ends.
fn stop_ending(stop: &Stop) -> Ending {
    match stop.reason() {
        None | Some(StopReason::Cancelled) => Ending::Cancelled,
        Some(StopReason::Disconnected) => Ending::Disconnected,
        Some(StopReason::Failed(code, message)) => Ending::Failed(code, message),
    }
}

/// What the relay learnt about one request's frames: verification and
/// quality events (the same monitor as at every other hop).
#[derive(Debug)]
pub(crate) struct Audit {
    validator: Validator,
    tally: Tally,
    transcoder: Option<Transcoder>,
}

impl Audit {
    fn new(ctx: &RelayContext) -> Self {
        Self {
            validator: Validator::new(),
            tally: Tally::with_dead_air_ms(ctx.dead_air_ms),
            transcoder: None,
        }
    }

    /// Checks one frame (from a worker with its hop latency, or from the
    /// phrase cache with none); counts and logs the quality events it
    /// raises.
    fn check(
        &mut self,
        req: &Request,
        frame: &AudioFrame,
        hop: Option<std::time::Duration>,
    ) -> Result<(), FrameError> {
        let outcome = self
            .validator
            .check(frame.sequence, frame.crc32c, &frame.payload);
        let events = self.tally.record(&outcome);
        metrics::frame_received(&outcome, hop, events);
        for event in events.iter() {
            warn!(request_id = %req.ids.request_id, trace_id = %req.ids.trace_id,
                session_id = %req.ids.session_id, sequence = frame.sequence,
                event = event.as_str(), "audio quality event");
        }
        outcome.map(|_| ())
    }
}

/// Shared by every relay of the process.
pub(crate) struct RelayContext {
    /// The workers.
    pub(crate) pool: Arc<Pool>,
    /// The phrase cache, when enabled.
    pub(crate) cache: Option<Arc<PhraseCache>>,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) first_frame_timeout: std::time::Duration,
    /// Silence longer than this within a request is dead air, ms.
    pub(crate) dead_air_ms: u32,
    /// A real-time stream with no frame for this long, while its client
    /// keeps up, has lost its worker.
    pub(crate) progress_timeout: std::time::Duration,
    /// A request whose client has taken none of its frames for this long
    /// is ended with `client_too_slow`.
    pub(crate) stalled_timeout: std::time::Duration,
    /// Opus bitrate, bits per second.
    pub(crate) opus_bitrate: u32,
    /// Injected faults (link latency) for chaos experiments.
    pub(crate) faults: Arc<tts_telemetry::faults::Faults>,
}

/// How long a request's last message (`end` or `error`) may wait for room
/// in its connection's queue before it is dropped (and counted).
const LAST_MESSAGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Relays one request to completion, cancellation or failure. Sends
/// exactly one of `end` or `error` for it.
pub(crate) async fn relay(
    ctx: Arc<RelayContext>,
    req: Request,
    text: String,
    out: mpsc::Sender<Outgoing>,
) -> String {
    let mut audit = Audit::new(&ctx);
    match Transcoder::new(req.options.format, ctx.opus_bitrate) {
        Ok(t) => audit.transcoder = Some(t),
        Err(e) => {
            // Formats are checked when the request is parsed; this is a
            // library failure.
            warn!(request_id = %req.ids.request_id, trace_id = %req.ids.trace_id,
                session_id = %req.ids.session_id, error = %e, "cannot encode the requested format");
        }
    }
    let span = req.span.clone();
    let ending =
        tracing::Instrument::instrument(stream_frames(&ctx, &req, &text, &mut audit, &out), span)
            .await;
    let (outcome, code) = match &ending {
        Ending::Completed => (Outcome::Completed, None),
        Ending::Cancelled => (Outcome::Cancelled, None),
        Ending::Failed(code, _) => (code.outcome(), Some(*code)),
        Ending::Refused { .. } => (Outcome::Refused, Some(ErrorCode::Overloaded)),
        Ending::Disconnected => (Outcome::Disconnected, None),
    };
    if req.counted() {
        metrics::request_finished(outcome, code);
    }
    let outcome = outcome.as_str();
    let ids = (&req.ids.request_id, &req.ids.trace_id, &req.ids.session_id);
    let elapsed_ms = req.received.elapsed().as_millis() as u64;
    let last = match ending {
        Ending::Completed | Ending::Cancelled => Some(Outgoing::End {
            request_id: req.ids.request_id.clone(),
            stream_id: req.stream_id,
            cancelled: matches!(ending, Ending::Cancelled),
        }),
        Ending::Failed(code, message) => {
            if code.outcome() == Outcome::Failed {
                warn!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                    code = code.as_str(), detail = %message, elapsed_ms, "request failed");
            } else {
                info!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                    code = code.as_str(), detail = %message, elapsed_ms, "request ended by the client's doing");
            }
            Some(Outgoing::Failed {
                stream_id: req.stream_id,
                error: ServerMessage::error(code, message, Some(req.ids.request_id.clone())),
            })
        }
        Ending::Refused {
            message,
            retry_after_ms,
        } => {
            info!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                retry_after_ms, elapsed_ms, "request refused: the worker is at capacity");
            Some(Outgoing::Failed {
                stream_id: req.stream_id,
                error: ServerMessage::Error {
                    code: ErrorCode::Overloaded,
                    message,
                    request_id: Some(req.ids.request_id.clone()),
                    retry_after_ms,
                },
            })
        }
        Ending::Disconnected => None,
    };
    if matches!(outcome, "completed" | "cancelled" | "disconnected") {
        let t = &audit.tally;
        info!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2, outcome,
            elapsed_ms, frames = t.ok, silent_frames = t.silence, clipping = t.clipping,
            dc_offset = t.dc_offset, dead_air = t.dead_air,
            leading_silence = t.leading_silence, "request finished");
    }
    if let Some(last) = last {
        // A client that reads nothing cannot hold the relay: the message
        // waits a bounded time, then is dropped and counted.
        match tokio::time::timeout(LAST_MESSAGE_LIMIT, out.send(last)).await {
            Ok(_) => {}
            Err(_) => {
                metrics::messages_dropped("last");
                warn!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                    "the request's last message found no room: the client is not reading");
            }
        }
    }
    req.ids.request_id
}

async fn stream_frames(
    ctx: &RelayContext,
    req: &Request,
    text: &str,
    audit: &mut Audit,
    out: &mpsc::Sender<Outgoing>,
) -> Ending {
    let stop = &req.stop;
    let key = ctx.cache.as_ref().and_then(|c| {
        let key = req.cache_key(text)?;
        c.key(&key, &ctx.pool)
    });
    if let (Some(cache), Some(key)) = (&ctx.cache, &key)
        && let Some(mut replay) = cache.lookup(key, req.delivery).await
    {
        let first = replay.next().await;
        return play(
            ctx,
            req,
            audit,
            out,
            stop,
            Source::Cached(replay),
            first,
            None,
        )
        .await;
    }
    let (lease, stream, first) = match open(ctx, req, text).await {
        Ok(opened) => opened,
        Err(ending) => return ending,
    };
    let mut recording = match (&ctx.cache, key) {
        (Some(cache), Some(key)) => Some(cache.recording(key)),
        _ => None,
    };
    let source = Source::Worker(Link::new(stream, Arc::clone(&ctx.faults)));
    let ending = play(
        ctx,
        req,
        audit,
        out,
        stop,
        source,
        first,
        recording.as_mut(),
    )
    .await;
    match &ending {
        Ending::Completed => {
            lease.succeeded();
            if let (Some(cache), Some(recording)) = (&ctx.cache, recording) {
                cache.store(recording);
            }
        }
        Ending::Failed(ErrorCode::WorkerUnavailable, message) => {
            warn!(request_id = %req.ids.request_id, trace_id = %req.ids.trace_id,
                session_id = %req.ids.session_id, worker = %lease.worker().url, detail = %message,
                "worker lost after the first frame: not retried");
            lease.failed();
        }
        _ => {}
    }
    ending
}

/// Where a request's frames come from.
enum Source {
    /// A worker's stream.
    Worker(Link),
    /// The phrase cache.
    Cached(Replay),
}

impl Source {
    async fn next(&mut self) -> Result<Option<AudioFrame>, Status> {
        match self {
            Self::Worker(link) => link.next().await,
            Self::Cached(replay) => Ok(replay.next().await),
        }
    }
}

/// A worker's stream, through an injected link latency while one is
/// active: a delay line that keeps reading while earlier frames wait, so
/// the delay is steady (as on a slow network), not cumulative.
struct Link {
    stream: tonic::Streaming<AudioFrame>,
    faults: Arc<tts_telemetry::faults::Faults>,
    /// What was read and when each may go on, in order.
    delayed: std::collections::VecDeque<(tokio::time::Instant, Result<Option<AudioFrame>, Status>)>,
    /// The stream has ended (or failed): nothing more to read.
    ended: bool,
}

impl Link {
    /// Items the delay line holds at most (about 5 s of real-time audio).
    const HOLD: usize = 256;

    fn new(
        stream: tonic::Streaming<AudioFrame>,
        faults: Arc<tts_telemetry::faults::Faults>,
    ) -> Self {
        Self {
            stream,
            faults,
            delayed: std::collections::VecDeque::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<Option<AudioFrame>, Status> {
        loop {
            let Some(&(due, _)) = self.delayed.front() else {
                if self.ended {
                    return Ok(None);
                }
                let item = self.stream.message().await;
                match self.faults.link_delay() {
                    None => return item,
                    Some(delay) => self.hold(item, delay),
                }
                continue;
            };
            if due <= tokio::time::Instant::now() {
                if let Some((_, item)) = self.delayed.pop_front() {
                    return item;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                item = self.stream.message(), if !self.ended && self.delayed.len() < Self::HOLD => {
                    let delay = self.faults.link_delay().unwrap_or_default();
                    self.hold(item, delay);
                }
            }
        }
    }

    fn hold(&mut self, item: Result<Option<AudioFrame>, Status>, delay: std::time::Duration) {
        self.ended |= !matches!(item, Ok(Some(_)));
        let earliest = self.delayed.back().map(|(at, _)| *at);
        let at = (tokio::time::Instant::now() + delay)
            .max(earliest.unwrap_or(tokio::time::Instant::now()));
        self.delayed.push_back((at, item));
    }
}

/// A worker's stream and its first frame.
type Opened = (Lease, tonic::Streaming<AudioFrame>, Option<AudioFrame>);

/// Calls a worker and waits for the first frame. A worker that fails
/// before it (unreachable, no audio in time, a refusal because it is full)
/// is replaced once by another, after a short jittered pause; once a frame
/// has come, the request stays on its worker, so no audio is repeated.
async fn open(ctx: &RelayContext, req: &Request, text: &str) -> Result<Opened, Ending> {
    let stop = &req.stop;
    let voice = req.voice.as_deref().unwrap_or("");
    let mut lease = ctx.pool.pick(voice, None).map_err(no_worker)?;
    let mut retried = false;
    loop {
        let mut client = lease.worker().client.clone();
        let call = async {
            let mut stream = client
                .synthesize(grpc::synthesize_request(&ctx.pool, req, text))
                .await?
                .into_inner();
            let first = stream.message().await?;
            if let Some(delay) = ctx.faults.link_delay() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Status>((stream, first))
        };
        let opened = tokio::select! {
            _ = stop.stopped() => return Err(stop_ending(stop)),
            r = tokio::time::timeout(ctx.first_frame_timeout, call) => r,
        };
        let failure = match opened {
            Ok(Ok((stream, first))) => return Ok((lease, stream, first)),
            Err(_) => Ending::Failed(
                ErrorCode::WorkerUnavailable,
                format!(
                    "no audio from the worker within {:?}",
                    ctx.first_frame_timeout
                ),
            ),
            Ok(Err(status)) => grpc::failure(&status),
        };
        let url = lease.worker().url.clone();
        let reason = match &failure {
            Ending::Failed(ErrorCode::WorkerUnavailable, _) => {
                lease.failed();
                "worker_unavailable"
            }
            Ending::Refused { .. } => {
                lease.succeeded();
                "overloaded"
            }
            // The worker answered for the request itself (bad text, an
            // unknown voice): another would answer the same.
            _ => {
                lease.succeeded();
                return Err(failure);
            }
        };
        if retried {
            return Err(failure);
        }
        retried = true;
        let Ok(next) = ctx.pool.pick(voice, Some(&url)) else {
            return Err(failure);
        };
        metrics::retried(reason);
        let pause = retry_pause();
        info!(request_id = %req.ids.request_id, trace_id = %req.ids.trace_id,
            session_id = %req.ids.session_id, from = %url, to = %next.worker().url, reason,
            pause_ms = pause.as_millis() as u64, "retrying on another worker before the first frame");
        tokio::select! {
            _ = stop.stopped() => return Err(stop_ending(stop)),
            _ = tokio::time::sleep(pause) => {}
        }
        lease = next;
    }
}

/// 10 to 50 ms, so that requests failed by the same event do not all land
/// on the next worker at once.
fn retry_pause() -> std::time::Duration {
    let spread = grpc::random_id() % 41;
    std::time::Duration::from_millis(10 + spread)
}

fn no_worker(e: NoWorker) -> Ending {
    match e {
        NoWorker::NoVoice(_) => Ending::Failed(ErrorCode::UnknownVoice, e.to_string()),
        NoWorker::Empty | NoWorker::Unavailable(_) => {
            Ending::Failed(ErrorCode::WorkerUnavailable, e.to_string())
        }
    }
}

/// Relays the stream from its first frame to its end, handing each
/// frame to `recording` (for the phrase cache) as it came.
#[allow(clippy::too_many_arguments)]
async fn play(
    ctx: &RelayContext,
    req: &Request,
    audit: &mut Audit,
    out: &mpsc::Sender<Outgoing>,
    stop: &Stop,
    mut source: Source,
    mut next: Option<AudioFrame>,
    mut recording: Option<&mut Recording>,
) -> Ending {
    let mut started = false;
    let from_cache = matches!(source, Source::Cached(_));
    // Real-time frames leave the worker on a steady clock, so a long
    // silence means the worker is gone; fast ones may wait behind others.
    let progress = match req.delivery {
        Delivery::Realtime => ctx.progress_timeout,
        Delivery::Fast => ctx.first_frame_timeout,
    };
    loop {
        let mut frame = match next {
            Some(frame) => frame,
            None => {
                return Ending::Failed(
                    ErrorCode::WorkerUnavailable,
                    "the worker's stream ended before the last frame".into(),
                );
            }
        };
        if !started {
            started = true;
            let voice = if frame.voice.is_empty() {
                req.voice.clone().unwrap_or_default()
            } else {
                frame.voice.clone()
            };
            let format = req.options.format;
            let start = ServerMessage::Start {
                request_id: req.ids.request_id.clone(),
                trace_id: req.ids.trace_id.clone(),
                stream_id: req.stream_id,
                voice,
                sample_rate: format.sample_rate,
                encoding: format.encoding.as_str().to_owned(),
                frame_samples: format.frame_samples() as u32,
            };
            if let Some(ending) = queue_message(ctx, req, out, stop, start).await {
                return ending;
            }
            if req.counted() {
                metrics::first_audio(req.received.elapsed());
            }
        }
        let last = frame.last;
        if let Some(r) = recording.as_deref_mut() {
            r.record(&frame);
        }
        if req.options.timestamps && !frame.words.is_empty() {
            let words = ServerMessage::Words {
                request_id: req.ids.request_id.clone(),
                stream_id: req.stream_id,
                words: std::mem::take(&mut frame.words)
                    .into_iter()
                    .map(|w| WordTiming {
                        word: w.text,
                        start_ms: w.start_ms,
                        end_ms: w.end_ms,
                    })
                    .collect(),
            };
            if let Some(ending) = queue_message(ctx, req, out, stop, words).await {
                return ending;
            }
        }
        match forward(ctx, req, audit, frame, out, stop, from_cache).await {
            Forwarded::Sent => {}
            Forwarded::Stop(ending) => return ending,
        }
        if last {
            return Ending::Completed;
        }
        next = tokio::select! {
            biased;
            _ = stop.stopped() => return stop_ending(stop),
            m = tokio::time::timeout(progress, source.next()) => match m {
                Ok(Ok(m)) => m,
                Ok(Err(status)) => return grpc::failure(&status),
                Err(_) => {
                    return Ending::Failed(
                        ErrorCode::WorkerUnavailable,
                        format!("no frame from the worker for {progress:?}"),
                    );
                }
            },
        };
    }
}

enum Forwarded {
    Sent,
    Stop(Ending),
}

/// Verifies one frame and queues it; waits while the queue is full.
async fn forward(
    ctx: &RelayContext,
    req: &Request,
    audit: &mut Audit,
    frame: AudioFrame,
    out: &mpsc::Sender<Outgoing>,
    stop: &Stop,
    from_cache: bool,
) -> Forwarded {
    let received = Instant::now();
    let received_us = tts_frame::now_us();
    ctx.stats
        .frames_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hop = (!from_cache)
        .then(|| std::time::Duration::from_micros(received_us.saturating_sub(frame.worker_ts_us)));
    let outcome = audit.check(req, &frame, hop);
    if let Err(e) = outcome {
        let from = if from_cache {
            "the phrase cache"
        } else {
            "the worker"
        };
        return Forwarded::Stop(Ending::Failed(
            ErrorCode::Internal,
            format!(
                "frame {} from {from} failed verification: {e}",
                frame.sequence
            ),
        ));
    }
    let samples = frame.samples.min(tts_frame::FRAME_SAMPLES as u32);
    let mut crc32c = frame.crc32c;
    let (payload, samples) = match audit.transcoder.as_mut() {
        Some(t) if !t.is_identity() => match t.convert(Bytes::from(frame.payload), samples) {
            Ok((payload, samples)) => {
                crc32c = tts_frame::checksum(&payload);
                (payload, samples)
            }
            Err(e) => {
                return Forwarded::Stop(Ending::Failed(
                    ErrorCode::Internal,
                    format!("frame {} could not be encoded: {e}", frame.sequence),
                ));
            }
        },
        Some(_) => (Bytes::from(frame.payload), samples),
        None => {
            return Forwarded::Stop(Ending::Failed(
                ErrorCode::Internal,
                "the requested format could not be set up".into(),
            ));
        }
    };
    if req.counted() {
        metrics::payload_sent(req.options.format.encoding, req.api.as_str(), payload.len());
    }
    let header = FrameHeader {
        stream_id: req.stream_id,
        sequence: frame.sequence,
        crc32c,
        last: frame.last,
        worker_ts_us: frame.worker_ts_us,
        orchestrator_ts_us: 0,
    };
    let item = Outgoing::Frame {
        header,
        payload,
        samples,
        received,
        cancelled: stop.token(),
    };
    ctx.stats
        .frame_enqueued(out.max_capacity() - out.capacity());
    match enqueue(out, item, stop, ctx.stalled_timeout).await {
        Queued::Sent { waited } => {
            if waited {
                metrics::backpressure(received.elapsed());
            }
            Forwarded::Sent
        }
        other => {
            ctx.stats.frame_dequeued();
            if matches!(other, Queued::Stalled) {
                metrics::frames_dropped(1);
            }
            Forwarded::Stop(not_queued(ctx, req, stop, other))
        }
    }
}

/// Queues a message of the request (`start`, `words`) on the same terms
/// as its frames; `None` once it is queued.
async fn queue_message(
    ctx: &RelayContext,
    req: &Request,
    out: &mpsc::Sender<Outgoing>,
    stop: &Stop,
    message: ServerMessage,
) -> Option<Ending> {
    match enqueue(out, Outgoing::Message(message), stop, ctx.stalled_timeout).await {
        Queued::Sent { .. } => None,
        other => Some(not_queued(ctx, req, stop, other)),
    }
}

/// How a request ends when one of its items could not be queued.
fn not_queued(ctx: &RelayContext, req: &Request, stop: &Stop, queued: Queued) -> Ending {
    match queued {
        Queued::Stalled => Ending::Failed(
            ErrorCode::ClientTooSlow,
            format!(
                "the client took none of the request's audio for {:?}",
                ctx.stalled_timeout
            ),
        ),
        Queued::Gone => {
            debug!(request_id = %req.ids.request_id, trace_id = %req.ids.trace_id,
                session_id = %req.ids.session_id, "client gone while relaying");
            Ending::Disconnected
        }
        Queued::Sent { .. } | Queued::Stopped => stop_ending(stop),
    }
}
