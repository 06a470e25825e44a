//! One request's relay: calls the worker, verifies each frame, and queues
//! it for the client. Waiting on the connection's bounded queue is what
//! stops the orchestrator from reading the worker's stream when the client
//! is slow; HTTP/2 flow control then holds the worker.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use tts_frame::{FrameError, FrameHeader, Tally, Validator};
use tts_proto::v1::tts_client::TtsClient;
use tts_proto::v1::{AudioFrame, SynthesizeRequest};
use tts_proto::{
    ERROR_CODE_HEADER, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, TRACE_ID_HEADER, TRACEPARENT_HEADER,
};

use crate::metrics::{self, RelayStats};
use crate::protocol::{Delivery, ErrorCode, ServerMessage};

/// What the connection's writer sends, in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A verified frame; the writer stamps the orchestrator time.
    Frame {
        header: FrameHeader,
        payload: Bytes,
        samples: u32,
        /// When the orchestrator received it from the worker.
        received: Instant,
        /// Set when the request is cancelled: the writer drops the frame.
        cancelled: CancellationToken,
    },
    /// The request's `end`; the writer fills in what it actually sent.
    End {
        request_id: String,
        stream_id: u32,
        cancelled: bool,
    },
    /// The request's `error`, which ends it instead of `end`.
    Failed {
        stream_id: u32,
        error: ServerMessage,
    },
    /// `start`.
    Message(ServerMessage),
    /// Close the connection (after everything queued before it).
    Close(axum::extract::ws::CloseFrame),
}

/// A request accepted by the connection.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) session_id: String,
    pub(crate) stream_id: u32,
    pub(crate) text: String,
    pub(crate) voice: Option<String>,
    pub(crate) delivery: Delivery,
    pub(crate) received: Instant,
}

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

/// What the relay learnt about one request's frames: verification,
/// quality counts, and the current run of silent frames (for dead air).
#[derive(Debug, Default)]
pub(crate) struct Audit {
    validator: Validator,
    tally: Tally,
    silence: SilenceRun,
    dead_air: bool,
}

/// The current run of silent frames.
#[derive(Debug, Default)]
struct SilenceRun {
    frames: u32,
}

impl SilenceRun {
    /// Adds a frame; returns how long the run of silence now is.
    fn push(&mut self, silent: bool) -> std::time::Duration {
        self.frames = if silent { self.frames + 1 } else { 0 };
        std::time::Duration::from_millis(u64::from(self.frames) * u64::from(tts_frame::FRAME_MS))
    }
}

impl Audit {
    /// Checks one frame; counts and logs dead air once per request.
    fn check(
        &mut self,
        ctx: &RelayContext,
        req: &Pending,
        frame: &AudioFrame,
        hop: std::time::Duration,
    ) -> Result<(), FrameError> {
        let outcome = self
            .validator
            .check(frame.sequence, frame.crc32c, &frame.payload);
        metrics::frame_received(&outcome, hop);
        self.tally.record(&outcome);
        let stats = outcome?;
        let silent_for = self.silence.push(stats.quality().silence);
        if !self.dead_air && silent_for > ctx.dead_air {
            let silent_ms = silent_for.as_millis() as u64;
            self.dead_air = true;
            metrics::dead_air();
            warn!(request_id = %req.request_id, trace_id = %req.trace_id,
                session_id = %req.session_id, silent_ms, sequence = frame.sequence,
                "dead air: only silent frames for too long");
        }
        Ok(())
    }
}

/// Shared by every relay of the process.
pub(crate) struct RelayContext {
    pub(crate) client: TtsClient<Channel>,
    /// The same connection, for `grpc.health.v1` (deep pings).
    pub(crate) channel: Channel,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) first_frame_timeout: std::time::Duration,
    /// Silence longer than this within a request counts as dead air.
    pub(crate) dead_air: std::time::Duration,
}

/// Relays one request to completion, cancellation or failure. Sends
/// exactly one of `end` or `error` for it.
pub(crate) async fn relay(
    ctx: Arc<RelayContext>,
    req: Pending,
    out: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
) -> String {
    let mut audit = Audit::default();
    let span = tracing::info_span!("relay", request_id = %req.request_id, trace_id = %req.trace_id,
        session_id = %req.session_id, stream_id = req.stream_id);
    tts_telemetry::otel::link_trace(&span, &req.trace_id);
    let ending =
        tracing::Instrument::instrument(stream_frames(&ctx, &req, &mut audit, &out, &cancel), span)
            .await;
    let (outcome, code) = match &ending {
        Ending::Completed => ("completed", "none"),
        Ending::Cancelled => ("cancelled", "none"),
        Ending::Failed(code, _) => ("failed", code.as_str()),
        Ending::Refused { .. } => ("refused", ErrorCode::Overloaded.as_str()),
        Ending::Disconnected => ("disconnected", "none"),
    };
    metrics::request_finished(outcome, code);
    let ids = (&req.request_id, &req.trace_id, &req.session_id);
    let elapsed_ms = req.received.elapsed().as_millis() as u64;
    let last = match ending {
        Ending::Completed | Ending::Cancelled => Some(Outgoing::End {
            request_id: req.request_id.clone(),
            stream_id: req.stream_id,
            cancelled: matches!(ending, Ending::Cancelled),
        }),
        Ending::Failed(code, message) => {
            warn!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2,
                code = code.as_str(), %message, elapsed_ms, "request failed");
            Some(Outgoing::Failed {
                stream_id: req.stream_id,
                error: ServerMessage::error(code, message, Some(req.request_id.clone())),
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
                    request_id: Some(req.request_id.clone()),
                    retry_after_ms,
                },
            })
        }
        Ending::Disconnected => None,
    };
    if !matches!(outcome, "failed" | "refused") {
        let t = &audit.tally;
        info!(request_id = %ids.0, trace_id = %ids.1, session_id = %ids.2, outcome,
            elapsed_ms, frames = t.ok, silent_frames = t.silence, clipped_frames = t.clipping,
            dc_offset_frames = t.dc_offset, dead_air = audit.dead_air, "request finished");
    }
    if let Some(last) = last {
        // The client may be gone; then there is no one to tell.
        let _ = out.send(last).await;
    }
    req.request_id
}

fn grpc_request(req: &Pending) -> tonic::Request<SynthesizeRequest> {
    let mut grpc = tonic::Request::new(SynthesizeRequest {
        text: req.text.clone(),
        voice: req.voice.clone().unwrap_or_default(),
        request_id: req.request_id.clone(),
        trace_id: req.trace_id.clone(),
        session_id: req.session_id.clone(),
        delivery: match req.delivery {
            Delivery::Realtime => tts_proto::v1::Delivery::Realtime,
            Delivery::Fast => tts_proto::v1::Delivery::Fast,
        } as i32,
    });
    let meta = grpc.metadata_mut();
    if let Ok(v) = req.request_id.parse() {
        meta.insert(REQUEST_ID_HEADER, v);
    }
    if let Ok(v) = req.trace_id.parse() {
        meta.insert(TRACE_ID_HEADER, v);
    }
    if is_w3c_trace_id(&req.trace_id) {
        let span: u64 = rand_span_id();
        if let Ok(v) = format!("00-{}-{span:016x}-01", req.trace_id).parse() {
            meta.insert(TRACEPARENT_HEADER, v);
        }
    }
    grpc
}

/// Whether `id` can stand in a W3C `traceparent` (32 lowercase hex, not all zero).
pub(crate) fn is_w3c_trace_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

fn rand_span_id() -> u64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    (hi ^ lo).max(1)
}

async fn stream_frames(
    ctx: &RelayContext,
    req: &Pending,
    audit: &mut Audit,
    out: &mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
) -> Ending {
    let mut client = ctx.client.clone();
    let call = async {
        let mut stream = client.synthesize(grpc_request(req)).await?.into_inner();
        let first = stream.message().await?;
        Ok::<_, Status>((stream, first))
    };
    let opened = tokio::select! {
        _ = cancel.cancelled() => return Ending::Cancelled,
        r = tokio::time::timeout(ctx.first_frame_timeout, call) => r,
    };
    let (mut stream, mut next) = match opened {
        Err(_) => {
            return Ending::Failed(
                ErrorCode::WorkerUnavailable,
                format!(
                    "no audio from the worker within {:?}",
                    ctx.first_frame_timeout
                ),
            );
        }
        Ok(Err(status)) => return failed(&status),
        Ok(Ok(opened)) => opened,
    };
    let mut started = false;
    loop {
        let frame = match next {
            Some(frame) => frame,
            None => {
                return Ending::Failed(
                    ErrorCode::Internal,
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
            let start = ServerMessage::Start {
                request_id: req.request_id.clone(),
                trace_id: req.trace_id.clone(),
                stream_id: req.stream_id,
                voice,
            };
            if out.send(Outgoing::Message(start)).await.is_err() {
                return Ending::Disconnected;
            }
            metrics::first_audio(req.received.elapsed());
        }
        let last = frame.last;
        match forward(ctx, req, audit, frame, out, cancel).await {
            Forwarded::Sent => {}
            Forwarded::Stop(ending) => return ending,
        }
        if last {
            return Ending::Completed;
        }
        next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ending::Cancelled,
            m = stream.message() => match m {
                Ok(m) => m,
                Err(status) => return failed(&status),
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
    req: &Pending,
    audit: &mut Audit,
    frame: AudioFrame,
    out: &mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
) -> Forwarded {
    let received = Instant::now();
    let received_us = tts_frame::now_us();
    ctx.stats
        .frames_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hop = std::time::Duration::from_micros(received_us.saturating_sub(frame.worker_ts_us));
    let outcome = audit.check(ctx, req, &frame, hop);
    if let Err(e) = outcome {
        return Forwarded::Stop(Ending::Failed(
            ErrorCode::Internal,
            format!(
                "frame {} from the worker failed verification: {e}",
                frame.sequence
            ),
        ));
    }
    let header = FrameHeader {
        stream_id: req.stream_id,
        sequence: frame.sequence,
        crc32c: frame.crc32c,
        last: frame.last,
        worker_ts_us: frame.worker_ts_us,
        orchestrator_ts_us: 0,
    };
    let item = Outgoing::Frame {
        header,
        payload: Bytes::from(frame.payload),
        samples: frame.samples.min(tts_frame::FRAME_SAMPLES as u32),
        received,
        cancelled: cancel.clone(),
    };
    ctx.stats
        .frame_enqueued(out.max_capacity() - out.capacity());
    let full = out.capacity() == 0;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            ctx.stats.frame_dequeued();
            Forwarded::Stop(Ending::Cancelled)
        }
        sent = out.send(item) => match sent {
            Ok(()) => {
                if full {
                    metrics::backpressure(received.elapsed());
                }
                Forwarded::Sent
            }
            Err(_) => {
                ctx.stats.frame_dequeued();
                debug!(request_id = %req.request_id, trace_id = %req.trace_id,
                    session_id = %req.session_id, "client gone while relaying");
                Forwarded::Stop(Ending::Disconnected)
            }
        },
    }
}

/// Maps a worker status to the client's error code: the worker's own
/// `tts-error-code` when it sent one, else by gRPC code.
fn failed(status: &Status) -> Ending {
    let header = |key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok());
    let from_worker = header(ERROR_CODE_HEADER).and_then(ErrorCode::from_wire);
    if from_worker == Some(ErrorCode::Overloaded) {
        return Ending::Refused {
            message: status.message().to_owned(),
            retry_after_ms: header(RETRY_AFTER_HEADER).and_then(|v| v.parse().ok()),
        };
    }
    let code = from_worker.unwrap_or(match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ErrorCode::WorkerUnavailable
        }
        tonic::Code::ResourceExhausted => ErrorCode::Overloaded,
        tonic::Code::NotFound => ErrorCode::UnknownVoice,
        tonic::Code::InvalidArgument => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    });
    let message = if code == ErrorCode::WorkerUnavailable && from_worker.is_none() {
        format!("worker unavailable: {}", status.message())
    } else {
        status.message().to_owned()
    };
    Ending::Failed(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_codes_win_over_grpc_codes() {
        let mut status = Status::invalid_argument("too long");
        status.metadata_mut().insert(
            ERROR_CODE_HEADER,
            tonic::metadata::MetadataValue::from_static("text_too_long"),
        );
        assert!(matches!(
            failed(&status),
            Ending::Failed(ErrorCode::TextTooLong, _)
        ));
        assert!(matches!(
            failed(&Status::unavailable("tcp connect error")),
            Ending::Failed(ErrorCode::WorkerUnavailable, _)
        ));
        assert!(matches!(
            failed(&Status::resource_exhausted("full")),
            Ending::Failed(ErrorCode::Overloaded, _)
        ));
        let mut refused = Status::resource_exhausted("at capacity");
        let meta = refused.metadata_mut();
        meta.insert(ERROR_CODE_HEADER, "overloaded".parse().expect("ascii"));
        meta.insert(RETRY_AFTER_HEADER, "350".parse().expect("ascii"));
        assert!(matches!(
            failed(&refused),
            Ending::Refused {
                retry_after_ms: Some(350),
                ..
            }
        ));
        assert!(matches!(
            failed(&Status::unknown("?")),
            Ending::Failed(ErrorCode::Internal, _)
        ));
    }

    #[test]
    fn silence_runs_reset_on_sound() {
        let mut run = SilenceRun::default();
        for _ in 0..99 {
            run.push(true);
        }
        assert_eq!(run.push(true).as_millis(), 2_000);
        assert_eq!(run.push(false).as_millis(), 0);
        assert_eq!(run.push(true).as_millis(), 20);
    }

    #[test]
    fn only_w3c_trace_ids_travel_as_traceparent() {
        assert!(is_w3c_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_w3c_trace_id("00000000000000000000000000000000"));
        assert!(!is_w3c_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_w3c_trace_id("abc"));
    }
}
