//! What a client sends: [`ClientMessage`] as it travels (serialised by
//! clients, read by the server), and [`Command`], the same message checked
//! (ranges, formats): what the server acts on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Delivery, Options, ParseError, RequestOptions, RequestSpec};

/// A client message as it travels, typed both ways. Serialising one gives
/// the JSON the server reads; reading one checks the types of its fields
/// but not their ranges (see [`Command`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Speak `text`.
    Synthesize {
        /// What to say.
        text: String,
        /// Ids, voice, delivery, speed, noise, encoding and rate.
        #[serde(flatten)]
        options: RequestOptions,
    },
    /// List the voices.
    Voices,
    /// Open a context: a request whose text arrives in pieces.
    ContextOpen {
        /// Ids, voice, delivery, speed, noise, encoding and rate.
        #[serde(flatten)]
        options: RequestOptions,
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
        /// Echoed in `pong` (a number or a string).
        id: Value,
        /// Also measure a gRPC round trip to the worker before answering.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deep: bool,
    },
    /// Stop a request.
    Cancel {
        /// Which one.
        request_id: String,
    },
}

impl ClientMessage {
    /// A `synthesize` of `text` with these options.
    pub fn synthesize(text: impl Into<String>, options: RequestOptions) -> Self {
        Self::Synthesize {
            text: text.into(),
            options,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain values cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a text message (types checked, ranges not). A message with
    /// `text` and no `type` is a `synthesize`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let value: Value =
            serde_json::from_str(raw).map_err(|e| ParseError::NotJson(e.to_string()))?;
        crate::read::message(value)
    }

    /// The request the message is about, if it names one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Synthesize { options, .. } | Self::ContextOpen { options } => {
                options.request_id.as_deref()
            }
            Self::Append { request_id, .. }
            | Self::Flush { request_id }
            | Self::Close { request_id }
            | Self::Cancel { request_id } => Some(request_id),
            Self::Voices | Self::Ping { .. } => None,
        }
    }
}

impl<'de> Deserialize<'de> for ClientMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        crate::read::message(value).map_err(serde::de::Error::custom)
    }
}

/// A client message checked: what the server acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
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
        /// Any piece.
        text: String,
    },
    /// Speak what the context has buffered now.
    Flush {
        /// The context.
        request_id: String,
    },
    /// No more text for the context.
    Close {
        /// The context.
        request_id: String,
    },
    /// Measure round-trip time.
    Ping {
        /// Echoed in `pong`.
        id: Value,
        /// Also measure a gRPC round trip to the worker.
        deep: bool,
    },
    /// Stop a request.
    Cancel {
        /// Which one.
        request_id: String,
    },
}

impl Command {
    /// Reads and checks a text message.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        ClientMessage::parse(raw)?.try_into()
    }
}

impl TryFrom<ClientMessage> for Command {
    type Error = ParseError;

    fn try_from(m: ClientMessage) -> Result<Self, ParseError> {
        Ok(match m {
            ClientMessage::Synthesize { text, options } => {
                let spec = RequestSpec::try_from(options)?;
                Self::Synthesize {
                    text,
                    voice: spec.voice,
                    request_id: spec.request_id,
                    trace_id: spec.trace_id,
                    delivery: spec.delivery,
                    options: spec.options,
                }
            }
            ClientMessage::ContextOpen { options } => {
                let spec = RequestSpec::try_from(options)?;
                Self::ContextOpen {
                    request_id: spec.request_id,
                    trace_id: spec.trace_id,
                    voice: spec.voice,
                    delivery: spec.delivery,
                    options: spec.options,
                }
            }
            ClientMessage::Voices => Self::Voices,
            ClientMessage::Append { request_id, text } => Self::Append { request_id, text },
            ClientMessage::Flush { request_id } => Self::Flush { request_id },
            ClientMessage::Close { request_id } => Self::Close { request_id },
            ClientMessage::Ping { id, deep } => Self::Ping { id, deep },
            ClientMessage::Cancel { request_id } => Self::Cancel { request_id },
        })
    }
}
