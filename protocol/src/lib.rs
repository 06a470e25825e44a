//! The WebSocket contract's JSON messages (see `docs/protocol.md`), typed
//! once for every side: the orchestrator parses [`ClientMessage`] and
//! writes [`ServerMessage`]; clients, the load tester and the doctor read
//! [`ServerMessage`] and write client messages with the same field names.

use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use tts_frame::{Encoding, Format, FormatError};

mod cutter;
pub use cutter::{Cutter, LONG_SENTENCE, MAX_CLAUSE};

/// Protocol version announced in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Error codes a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing fields, or a binary message.
    BadRequest,
    /// The text is empty or has nothing to speak.
    EmptyText,
    /// The text is longer than the configured limit.
    TextTooLong,
    /// The requested voice does not exist.
    UnknownVoice,
    /// The worker cannot be reached or is draining.
    WorkerUnavailable,
    /// Too many requests in flight, or admitted streams would be late.
    Overloaded,
    /// The client sends requests faster than its address may.
    RateLimited,
    /// The client did not read a request's audio for too long.
    ClientTooSlow,
    /// The server stopped before the request could finish.
    ShuttingDown,
    /// Anything else, including a frame that failed verification.
    Internal,
}

/// How a request ended, for counting: the `outcome` label of request
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its `end` was sent with every frame.
    Completed,
    /// The client cancelled it.
    Cancelled,
    /// The client's connection went away.
    Disconnected,
    /// The client asked for something it may not have (4xx-like).
    ClientError,
    /// Admission control refused it to protect admitted streams.
    Refused,
    /// The server failed it.
    Failed,
}

impl Outcome {
    /// Every outcome, for creating metric series at start-up.
    pub const ALL: [Self; 6] = [
        Self::Completed,
        Self::Cancelled,
        Self::Disconnected,
        Self::ClientError,
        Self::Refused,
        Self::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Disconnected => "disconnected",
            Self::ClientError => "client_error",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

impl ErrorCode {
    /// Every code, for creating metric series at start-up.
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::EmptyText,
        Self::TextTooLong,
        Self::UnknownVoice,
        Self::WorkerUnavailable,
        Self::Overloaded,
        Self::RateLimited,
        Self::ClientTooSlow,
        Self::ShuttingDown,
        Self::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::EmptyText => "empty_text",
            Self::TextTooLong => "text_too_long",
            Self::UnknownVoice => "unknown_voice",
            Self::WorkerUnavailable => "worker_unavailable",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::ClientTooSlow => "client_too_slow",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }

    /// Parses a code as it appears on the wire (also in the worker's
    /// `tts-error-code` metadata).
    pub fn from_wire(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// How a request that ended with this code is counted: the client's
    /// mistakes, refusals that protect admitted streams, and the server's
    /// own failures (the only ones an error-rate alert should count).
    pub fn outcome(self) -> Outcome {
        match self {
            Self::BadRequest
            | Self::EmptyText
            | Self::TextTooLong
            | Self::UnknownVoice
            | Self::RateLimited
            | Self::ClientTooSlow => Outcome::ClientError,
            Self::Overloaded => Outcome::Refused,
            Self::WorkerUnavailable | Self::ShuttingDown | Self::Internal => Outcome::Failed,
        }
    }
}

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

/// When a request's frames leave the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// On the stream's playout clock (at most about 1 s ahead): for
    /// listeners.
    #[default]
    Realtime,
    /// As fast as synthesis allows, behind every stream due sooner: for
    /// downloads.
    Fast,
}

/// How a request is spoken and encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Speaking rate: 1.0 is the voice's own, 2.0 twice as fast.
    pub speed: f32,
    /// Piper's phoneme noise; `None` for the voice's own.
    pub noise_scale: Option<f32>,
    /// Piper's duration noise; `None` for the voice's own.
    pub noise_w: Option<f32>,
    /// The frames' encoding and rate.
    pub format: Format,
    /// Send `words` messages: where each word is in the audio.
    pub timestamps: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            speed: 1.0,
            noise_scale: None,
            noise_w: None,
            format: Format::PIPELINE,
            timestamps: false,
        }
    }
}

/// The range of `speed`.
pub const SPEED_RANGE: std::ops::RangeInclusive<f32> = 0.25..=4.0;
/// The range of `noise_scale` and `noise_w`.
pub const NOISE_RANGE: std::ops::RangeInclusive<f32> = 0.0..=1.0;

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Speak `text`.
    Synthesize {
        /// What to say.
        text: String,
        /// Voice name; `None` for the worker's default.
        voice: Option<String>,
        /// Client-chosen id; generated when absent.
        request_id: Option<String>,
        /// Client trace id; generated when absent.
        trace_id: Option<String>,
        /// When frames leave (`"realtime"`, the default, or `"fast"`).
        delivery: Delivery,
        /// Speed, noise, encoding and rate.
        options: Options,
    },
    /// List the voices.
    Voices,
    /// Open a context: a request whose text arrives in pieces.
    ContextOpen {
        /// Client-chosen id (the context's request id); generated when absent.
        request_id: Option<String>,
        /// Client trace id; generated when absent.
        trace_id: Option<String>,
        /// Voice name; `None` for the worker's default.
        voice: Option<String>,
        /// When frames leave.
        delivery: Delivery,
        /// Speed, noise, encoding and rate.
        options: Options,
    },
    /// More text for a context.
    Append {
        /// The context.
        request_id: String,
        /// Any piece: a token, a word, half a sentence.
        text: String,
    },
    /// Speak what the context has buffered now, complete or not.
    Flush {
        /// The context.
        request_id: String,
    },
    /// No more text for the context: its `end` follows its last audio.
    Close {
        /// The context.
        request_id: String,
    },
    /// Measure round-trip time.
    Ping {
        /// Echoed in `pong`.
        id: Value,
        /// Also measure a gRPC round trip to the worker before answering.
        deep: bool,
    },
    /// Stop a request.
    Cancel {
        /// Which one.
        request_id: String,
    },
}

/// Why a client message was refused; always answered with `bad_request`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("message must be a JSON object")]
    NotObject,
    /// A `type` this server does not know.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field has a value outside its set.
    #[error("field {field:?} must be one of {allowed}")]
    Value {
        /// The field.
        field: &'static str,
        /// The values it accepts.
        allowed: &'static str,
    },
    /// A number outside its range.
    #[error("field {field:?} must be between {min} and {max}")]
    Range {
        /// The field.
        field: &'static str,
        /// Smallest accepted.
        min: f32,
        /// Largest accepted.
        max: f32,
    },
    /// `encoding` and `sample_rate` do not go together.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A required field is missing or has the wrong type.
    #[error("field {field:?} is missing or not a {expected}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its JSON type.
        expected: &'static str,
    },
}

impl ClientMessage {
    /// Parses a text message. A message with `text` and no `type` is a
    /// synthesize request.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let value: Value =
            serde_json::from_str(raw).map_err(|e| ParseError::NotJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ParseError::NotObject);
        };
        let string = |field: &'static str| -> Result<Option<String>, ParseError> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ParseError::Field {
                    field,
                    expected: "string",
                }),
            }
        };
        let kind = match obj.get("type") {
            None if obj.contains_key("text") => "synthesize",
            None => {
                return Err(ParseError::Field {
                    field: "type",
                    expected: "string",
                });
            }
            Some(Value::String(t)) => t.as_str(),
            Some(_) => {
                return Err(ParseError::Field {
                    field: "type",
                    expected: "string",
                });
            }
        };
        match kind {
            "synthesize" => Ok(Self::Synthesize {
                text: required(string("text")?, "text")?,
                voice: string("voice")?.filter(|v| !v.is_empty()),
                request_id: string("request_id")?.filter(|v| !v.is_empty()),
                trace_id: string("trace_id")?.filter(|v| !v.is_empty()),
                delivery: delivery(string("delivery")?.as_deref())?,
                options: parse_options(&obj)?,
            }),
            "voices" => Ok(Self::Voices),
            "context_open" => Ok(Self::ContextOpen {
                request_id: string("request_id")?.filter(|v| !v.is_empty()),
                trace_id: string("trace_id")?.filter(|v| !v.is_empty()),
                voice: string("voice")?.filter(|v| !v.is_empty()),
                delivery: delivery(string("delivery")?.as_deref())?,
                options: parse_options(&obj)?,
            }),
            "append" => Ok(Self::Append {
                request_id: required(string("request_id")?, "request_id")?,
                text: required(string("text")?, "text")?,
            }),
            "flush" => Ok(Self::Flush {
                request_id: required(string("request_id")?, "request_id")?,
            }),
            "close" => Ok(Self::Close {
                request_id: required(string("request_id")?, "request_id")?,
            }),
            "ping" => match obj.get("id") {
                Some(id @ (Value::Number(_) | Value::String(_))) => Ok(Self::Ping {
                    id: id.clone(),
                    deep: obj.get("deep").and_then(Value::as_bool).unwrap_or(false),
                }),
                _ => Err(ParseError::Field {
                    field: "id",
                    expected: "number",
                }),
            },
            "cancel" => Ok(Self::Cancel {
                request_id: required(string("request_id")?, "request_id")?,
            }),
            other => Err(ParseError::UnknownType(other.to_owned())),
        }
    }
}

fn delivery(value: Option<&str>) -> Result<Delivery, ParseError> {
    match value {
        None | Some("realtime") => Ok(Delivery::Realtime),
        Some("fast") => Ok(Delivery::Fast),
        Some(_) => Err(ParseError::Value {
            field: "delivery",
            allowed: "\"realtime\", \"fast\"",
        }),
    }
}

fn required(value: Option<String>, field: &'static str) -> Result<String, ParseError> {
    value.ok_or(ParseError::Field {
        field,
        expected: "string",
    })
}

/// The optional fields of a synthesize request (also used by the HTTP
/// endpoint's JSON body).
pub fn parse_options(obj: &serde_json::Map<String, Value>) -> Result<Options, ParseError> {
    let number = |field: &'static str,
                  range: &std::ops::RangeInclusive<f32>|
     -> Result<Option<f32>, ParseError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN) as f32;
                if range.contains(&v) {
                    Ok(Some(v))
                } else {
                    Err(ParseError::Range {
                        field,
                        min: *range.start(),
                        max: *range.end(),
                    })
                }
            }
            Some(_) => Err(ParseError::Field {
                field,
                expected: "number",
            }),
        }
    };
    let encoding = match obj.get("encoding") {
        None | Some(Value::Null) => Encoding::PcmS16le,
        Some(Value::String(e)) => Encoding::from_wire(e).ok_or(ParseError::Value {
            field: "encoding",
            allowed: "\"pcm_s16le\", \"opus\", \"mulaw\"",
        })?,
        Some(_) => {
            return Err(ParseError::Field {
                field: "encoding",
                expected: "string",
            });
        }
    };
    let sample_rate = match obj.get("sample_rate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().and_then(|r| u32::try_from(r).ok()).ok_or(
            ParseError::Field {
                field: "sample_rate",
                expected: "whole number",
            },
        )?),
    };
    let timestamps = match obj.get("timestamps") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ParseError::Field {
                field: "timestamps",
                expected: "boolean",
            });
        }
    };
    Ok(Options {
        speed: number("speed", &SPEED_RANGE)?.unwrap_or(1.0),
        noise_scale: number("noise_scale", &NOISE_RANGE)?,
        noise_w: number("noise_w", &NOISE_RANGE)?,
        format: Format::negotiate(encoding, sample_rate)?,
        timestamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"synthesize","text":"Hi","voice":"v","request_id":"r","trace_id":"t"}"#
            ),
            Ok(ClientMessage::Synthesize {
                text: "Hi".into(),
                voice: Some("v".into()),
                request_id: Some("r".into()),
                trace_id: Some("t".into()),
                delivery: Delivery::Realtime,
                options: Options::default(),
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"text":"Hello world","trace_id":"abc"}"#),
            Ok(ClientMessage::Synthesize {
                text: "Hello world".into(),
                voice: None,
                request_id: None,
                trace_id: Some("abc".into()),
                delivery: Delivery::Realtime,
                options: Options::default(),
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","id":7}"#),
            Ok(ClientMessage::Ping {
                id: 7.into(),
                deep: false
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","id":"a","deep":true}"#),
            Ok(ClientMessage::Ping {
                id: "a".into(),
                deep: true
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"cancel","request_id":"r1"}"#),
            Ok(ClientMessage::Cancel {
                request_id: "r1".into()
            })
        );
    }

    #[test]
    fn options_are_parsed_and_each_bad_one_is_named() {
        let m = ClientMessage::parse(
            r#"{"type":"synthesize","text":"Hi","speed":1.5,"noise_w":0.2,"encoding":"mulaw"}"#,
        );
        let Ok(ClientMessage::Synthesize { options, .. }) = m else {
            panic!("{m:?}");
        };
        assert_eq!(options.speed, 1.5);
        assert_eq!((options.noise_scale, options.noise_w), (None, Some(0.2)));
        assert_eq!(options.format.sample_rate, 8_000);
        let refused = |raw: &str| match ClientMessage::parse(raw) {
            Err(e) => e.to_string(),
            Ok(m) => panic!("accepted {m:?}"),
        };
        let base = r#"{"type":"synthesize","text":"Hi","#;
        assert!(refused(&format!(r#"{base}"speed":9}}"#)).contains("\"speed\""));
        assert!(refused(&format!(r#"{base}"speed":"fast"}}"#)).contains("\"speed\""));
        assert!(refused(&format!(r#"{base}"noise_scale":-1}}"#)).contains("noise_scale"));
        assert!(refused(&format!(r#"{base}"sample_rate":44100}}"#)).contains("sample_rate"));
        assert!(refused(&format!(r#"{base}"encoding":"mp3"}}"#)).contains("encoding"));
        assert!(refused(&format!(r#"{base}"timestamps":"yes"}}"#)).contains("timestamps"));
        assert!(matches!(
            ClientMessage::parse(&format!(r#"{base}"timestamps":true}}"#)),
            Ok(ClientMessage::Synthesize { options, .. }) if options.timestamps
        ));
        let opus = refused(&format!(r#"{base}"encoding":"opus","sample_rate":8000}}"#));
        assert!(opus.contains("opus") && opus.contains("48000"), "{opus}");
        assert_eq!(
            ClientMessage::parse(r#"{"type":"voices"}"#),
            Ok(ClientMessage::Voices)
        );
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"context_open","request_id":"c","encoding":"opus"}"#),
            Ok(ClientMessage::ContextOpen { options, .. }) if options.format.encoding == Encoding::Opus
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"append","request_id":"c","text":"Hel"}"#),
            Ok(ClientMessage::Append {
                request_id: "c".into(),
                text: "Hel".into()
            })
        );
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"append","request_id":"c"}"#),
            Err(ParseError::Field { field: "text", .. })
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"close","request_id":"c"}"#),
            Ok(ClientMessage::Close {
                request_id: "c".into()
            })
        );
    }

    #[test]
    fn delivery_is_realtime_unless_fast_is_asked_for() {
        let fast = ClientMessage::parse(r#"{"type":"synthesize","text":"Hi","delivery":"fast"}"#);
        assert!(matches!(
            fast,
            Ok(ClientMessage::Synthesize {
                delivery: Delivery::Fast,
                ..
            })
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"synthesize","text":"Hi","delivery":"slow"}"#),
            Err(ParseError::Value {
                field: "delivery",
                allowed: "\"realtime\", \"fast\""
            })
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        assert!(matches!(
            ClientMessage::parse("not json"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(ClientMessage::parse("[1]"), Err(ParseError::NotObject));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"dance"}"#),
            Err(ParseError::UnknownType("dance".into()))
        );
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"synthesize"}"#),
            Err(ParseError::Field { field: "text", .. })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"synthesize","text":5}"#),
            Err(ParseError::Field { field: "text", .. })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"cancel"}"#),
            Err(ParseError::Field {
                field: "request_id",
                ..
            })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Err(ParseError::Field { field: "id", .. })
        ));
        assert!(ClientMessage::parse(r#"{"hello":1}"#).is_err());
    }

    #[test]
    fn codes_round_trip_and_say_who_was_at_fault() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::TextTooLong.outcome(), Outcome::ClientError);
        assert_eq!(ErrorCode::Overloaded.outcome(), Outcome::Refused);
        assert_eq!(ErrorCode::WorkerUnavailable.outcome(), Outcome::Failed);
        assert_eq!(ErrorCode::from_wire("nonsense"), None);
    }

    #[test]
    fn server_messages_parse_back() {
        let err = ServerMessage::Error {
            code: ErrorCode::Overloaded,
            message: "full".into(),
            request_id: Some("r".into()),
            retry_after_ms: Some(250),
        };
        assert_eq!(ServerMessage::parse(&err.to_json()).expect("parses"), err);
        let pong = ServerMessage::parse(r#"{"type":"pong","id":3,"server_time_us":5}"#)
            .expect("a pong without worker fields");
        assert!(matches!(
            pong,
            ServerMessage::Pong {
                worker_rtt_us: None,
                ..
            }
        ));
        assert_eq!(err.request_id(), Some("r"));
    }

    #[test]
    fn server_messages_match_the_contract() {
        let ready: Value = serde_json::from_str(
            &ServerMessage::Ready {
                session_id: "s".into(),
                protocol: 1,
                sample_rate: 48_000,
                channels: 1,
                frame_samples: 960,
                encoding: "pcm_s16le".into(),
            }
            .to_json(),
        )
        .expect("json");
        assert_eq!(
            ready,
            serde_json::json!({"type":"ready","session_id":"s","protocol":1,"sample_rate":48000,
                "channels":1,"frame_samples":960,"encoding":"pcm_s16le"})
        );
        let err: Value = serde_json::from_str(
            &ServerMessage::error(ErrorCode::TextTooLong, "too long", None).to_json(),
        )
        .expect("json");
        assert_eq!(
            err,
            serde_json::json!({"type":"error","code":"text_too_long","message":"too long"})
        );
        let end: Value = serde_json::from_str(
            &ServerMessage::End {
                request_id: "r".into(),
                stream_id: 3,
                frames: 10,
                samples: 9_500,
                cancelled: false,
            }
            .to_json(),
        )
        .expect("json");
        assert_eq!(
            end,
            serde_json::json!({"type":"end","request_id":"r","stream_id":3,"frames":10,
                "samples":9500,"cancelled":false})
        );
    }
}
