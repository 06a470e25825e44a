//! One request's relay: calls the worker, verifies each frame, and queues
//! it for the client. Waiting on the connection's bounded queue is what
//! stops the orchestrator from reading the worker's stream when the client
//! is slow; HTTP/2 flow control then holds the worker.

pub(crate) mod grpc;
mod link;
mod open;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{Instrument, debug, info, warn};
use tts_frame::{FrameError, FrameHeader, Tally, Validator};
use tts_proto::v1::AudioFrame;

use crate::cache::{PhraseCache, Recording};
use crate::frame::{Failure, Frame, Item};
use crate::metrics::{self, RelayStats};
use crate::pool::Pool;
use crate::protocol::{Delivery, ErrorCode, Outcome, WordTiming};
use crate::queue::{FrameQueue, Queued};
use crate::request::Request;
use crate::stop::{Stop, StopReason};
use crate::transcode::Transcoder;
use link::{Link, Source};

/// Shared by every relay of the process.
pub(crate) struct RelayContext {
    /// The workers.
    pub(crate) pool: Arc<Pool>,
    /// The phrase cache, when enabled.
    pub(crate) cache: Option<Arc<PhraseCache>>,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) first_frame_timeout: Duration,
    /// Silence longer than this within a request is dead air, ms.
    pub(crate) dead_air_ms: u32,
    /// A real-time stream with no frame for this long, while its client
    /// keeps up, has lost its worker.
    pub(crate) progress_timeout: Duration,
    /// A request whose client has taken none of its frames for this long
    /// is ended with `client_too_slow`.
    pub(crate) stalled_timeout: Duration,
    /// Opus bitrate, bits per second.
    pub(crate) opus_bitrate: u32,
    /// Injected faults (link latency) for chaos experiments.
    pub(crate) faults: Arc<tts_telemetry::faults::Faults>,
}

/// How a request ended.
enum Ending {
    Completed,
    Cancelled,
    Failed(Failure),
    /// The worker refused the request: admitted streams would be late.
    Refused(Failure),
    /// The client's connection is gone; nothing more can be sent.
    Disconnected,
}

/// How a request stopped from outside ends.
fn stop_ending(stop: &Stop) -> Ending {
    match stop.reason() {
        None | Some(StopReason::Cancelled) => Ending::Cancelled,
        Some(StopReason::Disconnected) => Ending::Disconnected,
        Some(StopReason::Failed(code, message)) => Ending::Failed(Failure::new(code, message)),
    }
}

/// What a finished relay tells its connection.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) request_id: String,
    /// The worker refused the request and said when to retry.
    pub(crate) retry_after: Option<Duration>,
}

/// How long a request's last message (`end` or `error`) may wait for room
/// in its connection's queue before it is dropped (and counted).
const LAST_MESSAGE_LIMIT: Duration = Duration::from_secs(2);

/// Relays one request to completion, cancellation or failure, inside its
/// span (its lines carry its ids from there). Sends exactly one of `end`
/// or `error` for it.
pub(crate) async fn relay(
    ctx: Arc<RelayContext>,
    req: Request,
    text: String,
    out: FrameQueue,
) -> Ended {
    let span = req.span.clone();
    async move {
        let mut relay = Relay::new(&ctx, &req, &out);
        let ending = relay.stream(&text).await;
        let tally = relay.audit.tally;
        let retry_after = match &ending {
            Ending::Refused(f) => f.retry_after_ms.map(Duration::from_millis),
            _ => None,
        };
        finish(&req, ending, &tally, &out).await;
        Ended {
            request_id: req.ids.request_id,
            retry_after,
        }
    }
    .instrument(span)
    .await
}

/// Counts and logs how the request ended and queues its last item.
async fn finish(req: &Request, ending: Ending, tally: &Tally, out: &FrameQueue) {
    let (outcome, code) = match &ending {
        Ending::Completed => (Outcome::Completed, None),
        Ending::Cancelled => (Outcome::Cancelled, None),
        Ending::Failed(failure) => (failure.code.outcome(), Some(failure.code)),
        Ending::Refused(_) => (Outcome::Refused, Some(ErrorCode::Overloaded)),
        Ending::Disconnected => (Outcome::Disconnected, None),
    };
    if req.counted() {
        metrics::request_finished(outcome, code);
    }
    let elapsed_ms = req.received.elapsed().as_millis() as u64;
    if matches!(
        outcome,
        Outcome::Completed | Outcome::Cancelled | Outcome::Disconnected
    ) {
        let t = tally;
        info!(
            outcome = outcome.as_str(),
            elapsed_ms,
            frames = t.ok,
            silent_frames = t.silence,
            clipping = t.clipping,
            dc_offset = t.dc_offset,
            dead_air = t.dead_air,
            leading_silence = t.leading_silence,
            "request finished"
        );
    }
    let Some(last) = last_item(req, ending, elapsed_ms) else {
        return;
    };
    // A client that reads nothing cannot hold the relay: the message
    // waits a bounded time, then is dropped and counted.
    if !out.send_last(last, LAST_MESSAGE_LIMIT).await {
        metrics::messages_dropped("last");
        warn!("the request's last message found no room: the client is not reading");
    }
}

/// The request's `end` or `error` (none when its client is gone), with a
/// log line for a failure.
fn last_item(req: &Request, ending: Ending, elapsed_ms: u64) -> Option<Item> {
    let ids = &req.ids;
    let failure = match ending {
        Ending::Completed | Ending::Cancelled => {
            return Some(Item::End {
                request_id: ids.request_id.clone(),
                stream_id: req.stream_id,
                cancelled: matches!(ending, Ending::Cancelled),
            });
        }
        Ending::Disconnected => return None,
        Ending::Failed(failure) => {
            let (code, message) = (failure.code.as_str(), &failure.message);
            if failure.code.outcome() == Outcome::Failed {
                warn!(code, detail = %message, elapsed_ms,
                    "request failed");
            } else {
                info!(code, detail = %message, elapsed_ms,
                    "request ended by the client's doing");
            }
            failure
        }
        Ending::Refused(failure) => {
            info!(
                retry_after_ms = failure.retry_after_ms,
                elapsed_ms, "request refused: the worker is at capacity"
            );
            failure
        }
    };
    Some(Item::Failed {
        request_id: ids.request_id.clone(),
        stream_id: req.stream_id,
        failure,
    })
}

/// What the relay learnt about one request's frames: verification and
/// quality events (the same monitor as at every other hop).
#[derive(Debug)]
struct Audit {
    validator: Validator,
    tally: Tally,
}

impl Audit {
    /// Checks one frame (from a worker with its hop latency, or from the
    /// phrase cache with none); counts and logs the quality events it
    /// raises.
    fn check(&mut self, frame: &AudioFrame, hop: Option<Duration>) -> Result<(), FrameError> {
        let outcome = self
            .validator
            .check(frame.sequence, frame.crc32c, &frame.payload);
        let events = self.tally.record(&outcome);
        metrics::frame_received(&outcome, hop, events);
        for event in events.iter() {
            warn!(
                sequence = frame.sequence,
                event = event.as_str(),
                "audio quality event"
            );
        }
        outcome.map(|_| ())
    }
}

/// One request being relayed.
struct Relay<'a> {
    ctx: &'a RelayContext,
    req: &'a Request,
    out: &'a FrameQueue,
    audit: Audit,
    /// The client's format; `None` when it could not be set up.
    transcoder: Option<Transcoder>,
    /// Whether `start` has been queued.
    started: bool,
}

impl<'a> Relay<'a> {
    fn new(ctx: &'a RelayContext, req: &'a Request, out: &'a FrameQueue) -> Self {
        let transcoder = match Transcoder::new(req.options.format, ctx.opus_bitrate) {
            Ok(t) => Some(t),
            Err(e) => {
                // Formats are checked when the request is parsed; this is
                // a library failure.
                warn!(error = %e,
                    "cannot encode the requested format");
                None
            }
        };
        Self {
            ctx,
            req,
            out,
            audit: Audit {
                validator: Validator::new(),
                tally: Tally::with_dead_air_ms(ctx.dead_air_ms),
            },
            transcoder,
            started: false,
        }
    }

    /// The request's audio, from the phrase cache when it has it, else
    /// from a worker (and into the cache when it completes).
    async fn stream(&mut self, text: &str) -> Ending {
        let (ctx, req) = (self.ctx, self.req);
        let key = ctx.cache.as_ref().and_then(|c| {
            let key = req.cache_key(text)?;
            c.key(&key, &ctx.pool)
        });
        if let (Some(cache), Some(key)) = (&ctx.cache, &key)
            && let Some(mut replay) = cache.lookup(key, req.delivery).await
        {
            let first = replay.next().await;
            return self.play(Source::Cached(replay), first, None).await;
        }
        let (lease, stream, first) = match open::open(ctx, req, text).await {
            Ok(opened) => opened,
            Err(ending) => return ending,
        };
        let mut recording = match (&ctx.cache, key) {
            (Some(cache), Some(key)) => Some(cache.recording(key)),
            _ => None,
        };
        let source = Source::Worker(Link::new(stream, Arc::clone(&ctx.faults)));
        let ending = self.play(source, first, recording.as_mut()).await;
        match &ending {
            Ending::Completed => {
                lease.succeeded();
                if let (Some(cache), Some(recording)) = (&ctx.cache, recording) {
                    cache.store(recording);
                }
            }
            Ending::Failed(Failure {
                code: ErrorCode::WorkerUnavailable,
                message,
                ..
            }) => {
                warn!(worker = %lease.worker().url,
                    detail = %message, "worker lost after the first frame: not retried");
                lease.failed();
            }
            _ => {}
        }
        ending
    }

    /// Relays the stream from its first frame to its end, handing each
    /// frame to `recording` (for the phrase cache) as it came.
    async fn play(
        &mut self,
        mut source: Source,
        mut next: Option<AudioFrame>,
        mut recording: Option<&mut Recording>,
    ) -> Ending {
        let from_cache = matches!(source, Source::Cached(_));
        // Real-time frames leave the worker on a steady clock, so a long
        // silence means the worker is gone; fast ones may wait behind others.
        let progress = match self.req.delivery {
            Delivery::Realtime => self.ctx.progress_timeout,
            Delivery::Fast => self.ctx.first_frame_timeout,
        };
        let stop = &self.req.stop;
        loop {
            let Some(mut frame) = next else {
                return Ending::Failed(Failure::new(
                    ErrorCode::WorkerUnavailable,
                    "the worker's stream ended before the last frame",
                ));
            };
            if let Some(ending) = self.start(&frame).await {
                return ending;
            }
            let last = frame.last;
            if let Some(r) = recording.as_deref_mut() {
                r.record(&frame);
            }
            if let Some(ending) = self.words(&mut frame).await {
                return ending;
            }
            if let Some(ending) = self.forward(frame, from_cache).await {
                return ending;
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
                        return Ending::Failed(Failure::new(
                            ErrorCode::WorkerUnavailable,
                            format!("no frame from the worker for {progress:?}"),
                        ));
                    }
                },
            };
        }
    }

    /// Queues `start` before the first frame (the voice is the one that
    /// speaks, as the first frame names it).
    async fn start(&mut self, frame: &AudioFrame) -> Option<Ending> {
        if self.started {
            return None;
        }
        self.started = true;
        let req = self.req;
        let voice = if frame.voice.is_empty() {
            req.voice.clone().unwrap_or_default()
        } else {
            frame.voice.clone()
        };
        let start = Item::Start {
            request_id: req.ids.request_id.clone(),
            trace_id: req.ids.trace_id.clone(),
            stream_id: req.stream_id,
            voice,
            format: req.options.format,
        };
        if let Some(ending) = self.queue(start).await {
            return Some(ending);
        }
        if req.counted() {
            metrics::first_audio(req.received.elapsed());
        }
        None
    }

    /// Queues the words a frame starts, when the client asked for them.
    async fn words(&mut self, frame: &mut AudioFrame) -> Option<Ending> {
        if !self.req.options.timestamps || frame.words.is_empty() {
            return None;
        }
        let words = Item::Words {
            request_id: self.req.ids.request_id.clone(),
            stream_id: self.req.stream_id,
            words: std::mem::take(&mut frame.words)
                .into_iter()
                .map(|w| WordTiming {
                    word: w.text,
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                })
                .collect(),
        };
        self.queue(words).await
    }

    /// Verifies one frame, converts it and queues it; waits while the
    /// queue is full.
    async fn forward(&mut self, frame: AudioFrame, from_cache: bool) -> Option<Ending> {
        let (ctx, req) = (self.ctx, self.req);
        let received = Instant::now();
        let received_us = tts_frame::now_us();
        ctx.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        let hop = (!from_cache)
            .then(|| Duration::from_micros(received_us.saturating_sub(frame.worker_ts_us)));
        if let Err(e) = self.audit.check(&frame, hop) {
            let from = if from_cache {
                "the phrase cache"
            } else {
                "the worker"
            };
            let message = format!(
                "frame {} from {from} failed verification: {e}",
                frame.sequence
            );
            return Some(Ending::Failed(Failure::new(ErrorCode::Internal, message)));
        }
        let frame = match self.encode(frame, received) {
            Ok(frame) => frame,
            Err(failure) => return Some(Ending::Failed(failure)),
        };
        if req.counted() {
            metrics::payload_sent(
                req.options.format.encoding,
                req.api.as_str(),
                frame.payload.len(),
            );
        }
        let stalled = ctx.stalled_timeout;
        match self.out.send(Item::Frame(frame), &req.stop, stalled).await {
            Queued::Sent { waited } => {
                if waited {
                    metrics::backpressure(received.elapsed());
                }
                None
            }
            other => {
                if matches!(other, Queued::Stalled) {
                    metrics::frames_dropped(1);
                }
                Some(self.not_queued(other))
            }
        }
    }

    /// A verified worker frame in the client's format (a converted payload
    /// gets its own checksum).
    fn encode(&mut self, frame: AudioFrame, received: Instant) -> Result<Frame, Failure> {
        let samples = frame.samples.min(tts_frame::FRAME_SAMPLES as u32);
        let mut crc32c = frame.crc32c;
        let (payload, samples) = match self.transcoder.as_mut() {
            Some(t) if !t.is_identity() => match t.convert(Bytes::from(frame.payload), samples) {
                Ok((payload, samples)) => {
                    crc32c = tts_frame::checksum(&payload);
                    (payload, samples)
                }
                Err(e) => {
                    let message = format!("frame {} could not be encoded: {e}", frame.sequence);
                    return Err(Failure::new(ErrorCode::Internal, message));
                }
            },
            Some(_) => (Bytes::from(frame.payload), samples),
            None => {
                return Err(Failure::new(
                    ErrorCode::Internal,
                    "the requested format could not be set up",
                ));
            }
        };
        let header = FrameHeader {
            stream_id: self.req.stream_id,
            sequence: frame.sequence,
            crc32c,
            last: frame.last,
            worker_ts_us: frame.worker_ts_us,
            orchestrator_ts_us: 0,
        };
        Ok(Frame {
            header,
            payload,
            samples,
            received,
            cancelled: self.req.stop.token(),
        })
    }

    /// Queues an item of the request (`start`, `words`) on the same terms
    /// as its frames; `None` once it is queued.
    async fn queue(&mut self, item: Item) -> Option<Ending> {
        let stalled = self.ctx.stalled_timeout;
        match self.out.send(item, &self.req.stop, stalled).await {
            Queued::Sent { .. } => None,
            other => Some(self.not_queued(other)),
        }
    }

    /// How the request ends when one of its items could not be queued.
    fn not_queued(&self, queued: Queued) -> Ending {
        let req = self.req;
        match queued {
            Queued::Stalled => Ending::Failed(Failure::new(
                ErrorCode::ClientTooSlow,
                format!(
                    "the client took none of the request's audio for {:?}",
                    self.ctx.stalled_timeout
                ),
            )),
            Queued::Gone => {
                debug!("client gone while relaying");
                Ending::Disconnected
            }
            Queued::Sent { .. } | Queued::Stopped => stop_ending(&req.stop),
        }
    }
}
