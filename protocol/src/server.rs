//! What the server sends: every JSON message, typed both ways.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Encoding, ErrorCode};

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once on connect.
    Ready {
        /// Identifies this connection in logs.
        session_id: String,
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// 48,000.
        sample_rate: u32,
        /// 1.
        channels: u32,
        /// 960.
        frame_samples: u32,
        /// `pcm_s16le`.
        encoding: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id, echoed as sent.
        id: Value,
        /// Server clock, µs since the Unix epoch.
        server_time_us: u64,
        /// For a deep ping: the worker's gRPC health round trip, µs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_rtt_us: Option<u64>,
        /// For a deep ping: the worker's health (`SERVING`, `NOT_SERVING`,
        /// or the error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_status: Option<String>,
    },
    /// Before the first frame of a request.
    Start {
        /// The request.
        request_id: String,
        /// Its trace.
        trace_id: String,
        /// The stream id in its frames' headers.
        stream_id: u32,
        /// The voice speaking.
        voice: String,
        /// The frames' sample rate, Hz.
        #[serde(default = "default_rate")]
        sample_rate: u32,
        /// The frames' encoding: `pcm_s16le`, `mulaw` or `opus`.
        #[serde(default = "default_encoding")]
        encoding: String,
        /// Samples in each frame (20 ms at `sample_rate`).
        #[serde(default = "default_frame_samples")]
        frame_samples: u32,
    },
    /// Answer to `voices`.
    Voices {
        /// The voice used when a request names none.
        default_voice: String,
        /// Every voice the worker can speak with.
        voices: Vec<VoiceEntry>,
    },
    /// With `timestamps`: where words lie in the request's audio. Sent
    /// before the frame in which the first of them starts.
    Words {
        /// The request.
        request_id: String,
        /// Its stream id.
        stream_id: u32,
        /// In order.
        words: Vec<WordTiming>,
    },
    /// After the last frame of a request.
    End {
        /// The request.
        request_id: String,
        /// Its stream id.
        stream_id: u32,
        /// Frames sent.
        frames: u64,
        /// Samples of audio sent, padding excluded.
        samples: u64,
        /// Whether the request was cancelled.
        cancelled: bool,
    },
    /// A request or message failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// For people.
        message: String,
        /// The request it concerns, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// For `overloaded` and `rate_limited`: milliseconds after which
        /// the request would likely be accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

fn default_rate() -> u32 {
    tts_frame::SAMPLE_RATE
}

fn default_encoding() -> String {
    Encoding::PcmS16le.as_str().to_owned()
}

fn default_frame_samples() -> u32 {
    tts_frame::FRAME_SAMPLES as u32
}

/// Where one word lies in a request's audio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordTiming {
    /// The word as written, without the punctuation around it.
    pub word: String,
    /// Its start, milliseconds from the start of the request's audio
    /// (frame `k` starts at `k × 20`).
    pub start_ms: u32,
    /// Its end, milliseconds.
    pub end_ms: u32,
}

/// One voice, as listed by `voices` and `GET /v1/voices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceEntry {
    /// The name to pass as `voice`.
    pub name: String,
    /// `piper` or `espeak`.
    pub engine: String,
    /// Language tag, e.g. `en-US`.
    pub language: String,
    /// The engine's own sample rate (every voice is served at any of the
    /// client rates).
    pub native_sample_rate: u32,
    /// Whether audio leaves before a whole clause is synthesised.
    pub streaming: bool,
    /// Whether it gives word timestamps (`timestamps: true`).
    #[serde(default)]
    pub timestamps: bool,
}

impl ServerMessage {
    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, request_id: Option<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            request_id,
            retry_after_ms: None,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses a message from the server.
    pub fn parse(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// The request the message concerns, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Start { request_id, .. }
            | Self::End { request_id, .. }
            | Self::Words { request_id, .. } => Some(request_id),
            Self::Error { request_id, .. } => request_id.as_deref(),
            Self::Ready { .. } | Self::Pong { .. } | Self::Voices { .. } => None,
        }
    }
}
