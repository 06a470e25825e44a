//! What a request's relay hands on, typed: its `start`, word timings,
//! verified frames, and its one last item (`end` or a failure). The
//! WebSocket writer turns items into messages at the socket; the HTTP
//! endpoint and contexts read them as they are.

use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tts_frame::FrameHeader;

use crate::protocol::{ErrorCode, Format, ServerMessage, WordTiming};

/// A verified frame, in the client's format.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its header; the writer stamps the orchestrator time.
    pub(crate) header: FrameHeader,
    pub(crate) payload: Bytes,
    /// Real samples in it (the last frame of a stream is padded).
    pub(crate) samples: u32,
    /// When the orchestrator received it from the worker.
    pub(crate) received: Instant,
    /// Cancelled when the request is stopped: the writer drops the frame.
    pub(crate) cancelled: CancellationToken,
}

/// Why a request failed or a message of it was refused: what the client
/// is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// When to retry, for a refusal (ms).
    pub(crate) retry_after_ms: Option<u64>,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The `error` message that says it for `request_id`.
    pub(crate) fn to_message(&self, request_id: String) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            request_id: Some(request_id),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// One item of a request's stream, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// `start`: audio follows in `format`.
    Start {
        request_id: String,
        trace_id: String,
        stream_id: u32,
        voice: String,
        format: Format,
    },
    /// Where words are in the audio.
    Words {
        request_id: String,
        stream_id: u32,
        words: Vec<WordTiming>,
    },
    Frame(Frame),
    /// The request's `end`; the writer fills in what it actually sent.
    End {
        request_id: String,
        stream_id: u32,
        cancelled: bool,
    },
    /// The request's `error`, which ends it instead of `end`.
    Failed {
        request_id: String,
        stream_id: u32,
        failure: Failure,
    },
    /// An `error` about one message of a request that goes on (a piece
    /// sent to a closed context).
    Refused {
        request_id: String,
        failure: Failure,
    },
}

impl Item {
    /// The message for every item but a frame (which goes as binary);
    /// an `end` says no frames (the writer, which knows what it sent,
    /// makes its own).
    pub(crate) fn into_message(self) -> Result<ServerMessage, Frame> {
        Ok(match self {
            Self::Frame(frame) => return Err(frame),
            Self::Start {
                request_id,
                trace_id,
                stream_id,
                voice,
                format,
            } => ServerMessage::Start {
                request_id,
                trace_id,
                stream_id,
                voice,
                sample_rate: format.sample_rate,
                encoding: format.encoding.as_str().to_owned(),
                frame_samples: format.frame_samples() as u32,
            },
            Self::Words {
                request_id,
                stream_id,
                words,
            } => ServerMessage::Words {
                request_id,
                stream_id,
                words,
            },
            Self::End {
                request_id,
                stream_id,
                cancelled,
            } => ServerMessage::End {
                request_id,
                stream_id,
                frames: 0,
                samples: 0,
                cancelled,
            },
            Self::Failed {
                request_id,
                failure,
                ..
            }
            | Self::Refused {
                request_id,
                failure,
            } => failure.to_message(request_id),
        })
    }
}
