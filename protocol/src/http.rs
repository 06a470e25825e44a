//! The OpenAI-compatible HTTP endpoint's contract: the body of `POST
//! /v1/audio/speech` ([`SpeechRequest`]), its error body ([`OpenAiError`])
//! and `GET /v1/voices` ([`VoiceList`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Delivery, Encoding, Options, ParseError, SPEED_RANGE, VoiceEntry};

/// OpenAI's voice names, spoken by the default voice.
pub const OPENAI_VOICES: [&str; 11] = [
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];

/// Default rate of `wav` and `pcm` responses: OpenAI's 24 kHz.
pub const DEFAULT_HTTP_RATE: u32 = 24_000;

/// The container around a response's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// RIFF/WAVE with "unknown" lengths (the body streams).
    Wav,
    /// Raw s16le.
    Pcm,
    /// Ogg with one Opus packet per 20 ms.
    OggOpus,
    /// MPEG-1/2 Layer III, mono (OpenAI's default format).
    Mp3,
    /// FLAC, mono 16-bit, one FLAC frame per 20 ms.
    Flac,
}

/// What a speech request asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechRequest {
    /// The text.
    pub input: String,
    /// The voice; `None` (also for OpenAI's names) for the default.
    pub voice: Option<String>,
    /// How the audio is wrapped.
    pub container: Container,
    /// When the audio is written: as fast as it is synthesised (the
    /// endpoint's default, as OpenAI's API answers), or on the playout
    /// clock (`"delivery":"realtime"`).
    pub delivery: Delivery,
    /// Speed, noise, encoding and rate.
    pub options: Options,
}

/// Why a speech request's body was refused: the message and the field
/// (`param` in OpenAI's error shape).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SpeechError {
    /// For people.
    pub message: String,
    /// The field.
    pub param: &'static str,
}

fn bad(param: &'static str, message: String) -> SpeechError {
    SpeechError { message, param }
}

impl TryFrom<&[u8]> for SpeechRequest {
    type Error = SpeechError;

    /// Parses the JSON body; the error names the field.
    fn try_from(body: &[u8]) -> Result<Self, SpeechError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad("body", format!("body is not JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(bad("body", "body must be a JSON object".into()));
        };
        let string =
            |obj: &serde_json::Map<String, Value>, field: &'static str| match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(field, format!("{field} must be a string"))),
            };
        let input =
            string(&obj, "input")?.ok_or_else(|| bad("input", "input is required".into()))?;
        // Any model name is accepted: there is one speech model per voice.
        string(&obj, "model")?;
        let voice = string(&obj, "voice")?
            .filter(|v| !v.is_empty() && !OPENAI_VOICES.contains(&v.as_str()));
        let format = string(&obj, "response_format")?;
        // OpenAI's default is MP3.
        let (container, encoding) = match format.as_deref().unwrap_or("mp3") {
            "mp3" => (Container::Mp3, Encoding::PcmS16le),
            "flac" => (Container::Flac, Encoding::PcmS16le),
            "wav" => (Container::Wav, Encoding::PcmS16le),
            "pcm" => (Container::Pcm, Encoding::PcmS16le),
            "opus" => (Container::OggOpus, Encoding::Opus),
            other => {
                return Err(bad(
                    "response_format",
                    format!(
                        "response_format {other:?} is not served; use \"mp3\", \"flac\", \"wav\", \"pcm\" or \"opus\" (aac has no freely licensed encoder to build on)"
                    ),
                ));
            }
        };
        // The WebSocket options reader checks speed, noise and rate; the
        // encoding comes from response_format.
        if encoding == Encoding::PcmS16le && !obj.contains_key("sample_rate") {
            obj.insert("sample_rate".into(), DEFAULT_HTTP_RATE.into());
        }
        obj.insert("encoding".into(), encoding.as_str().into());
        if obj
            .get("timestamps")
            .is_some_and(|t| t != &Value::Null && t != &Value::Bool(false))
        {
            return Err(bad(
                "timestamps",
                "timestamps are sent as WebSocket messages; they are not served over HTTP".into(),
            ));
        }
        // A file's worth of audio as fast as it is made, unless asked
        // otherwise; the client's reading still holds the worker back.
        if obj.get("delivery").is_none_or(Value::is_null) {
            obj.insert("delivery".into(), Delivery::Fast.as_str().into());
        }
        let requested = crate::read::request_options(&obj).map_err(refused)?;
        let options = Options::try_from(&requested).map_err(refused)?;
        Ok(Self {
            input,
            voice,
            container,
            delivery: requested.delivery,
            options,
        })
    }
}

/// An options refusal in the endpoint's words.
fn refused(e: ParseError) -> SpeechError {
    let param: &'static str = match &e {
        ParseError::Range { field, .. }
        | ParseError::Field { field, .. }
        | ParseError::Value { field, .. } => field,
        ParseError::Format(_) => "sample_rate",
        _ => "body",
    };
    let message = match &e {
        ParseError::Range { field: "speed", .. } => format!(
            "speed must be between {} and {}",
            SPEED_RANGE.start(),
            SPEED_RANGE.end()
        ),
        _ => e.to_string(),
    };
    SpeechError { message, param }
}

/// An error in OpenAI's shape: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorBody,
}

/// The inside of [`OpenAiError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    /// For people.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`,
    /// `authentication_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The field at fault, if one is.
    pub param: Option<String>,
    /// The WebSocket error code.
    pub code: String,
}

/// The model names the speech endpoint answers to: any name is accepted
/// (the voice decides how speech sounds), these are the ones OpenAI's
/// clients offer.
pub const MODELS: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];

/// `GET /v1/models`, in OpenAI's shape: `{"object":"list","data":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

/// One model of [`ModelList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Its name, as `model` in a speech request.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds; 0 (the models are the voices on the workers).
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}

impl ModelList {
    /// The models this endpoint serves: [`MODELS`].
    pub fn served() -> Self {
        Self {
            object: "list".into(),
            data: MODELS
                .iter()
                .map(|id| Model {
                    id: (*id).into(),
                    object: "model".into(),
                    created: 0,
                    owned_by: "tts-stream".into(),
                })
                .collect(),
        }
    }
}

/// `GET /v1/voices` (and the WebSocket `voices` answer's content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceList {
    /// The voice used when a request names none.
    pub default_voice: String,
    /// Every voice.
    pub voices: Vec<VoiceEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<SpeechRequest, SpeechError> {
        SpeechRequest::try_from(body.as_bytes())
    }

    #[test]
    fn a_speech_body_is_checked_and_each_refusal_names_its_field() {
        let ok = parse(r#"{"model":"tts-1","voice":"alloy","input":"Hi"}"#).expect("valid");
        assert_eq!(
            (ok.input.as_str(), ok.voice, ok.container),
            ("Hi", None, Container::Mp3),
            "MP3 unless asked otherwise, as OpenAI's API"
        );
        let flac = parse(r#"{"input":"Hi","response_format":"flac"}"#).expect("ok");
        assert_eq!(flac.container, Container::Flac);
        assert_eq!(flac.options.format.encoding, Encoding::PcmS16le);
        assert_eq!(ok.options.format.sample_rate, DEFAULT_HTTP_RATE);
        assert_eq!(
            ok.delivery,
            Delivery::Fast,
            "as fast as synthesised by default"
        );
        let paced = parse(r#"{"input":"Hi","delivery":"realtime"}"#).expect("valid");
        assert_eq!(paced.delivery, Delivery::Realtime);
        let opus =
            parse(r#"{"input":"Hi","voice":"espeak-en-us","response_format":"opus","speed":1.5}"#)
                .expect("ok");
        assert_eq!(opus.voice.as_deref(), Some("espeak-en-us"));
        assert_eq!(opus.container, Container::OggOpus);
        assert_eq!(opus.options.format.encoding, Encoding::Opus);
        assert_eq!(opus.options.speed, 1.5);
        let pcm =
            parse(r#"{"input":"Hi","response_format":"pcm","sample_rate":8000}"#).expect("ok");
        assert_eq!(pcm.options.format.sample_rate, 8_000);
        for (body, param) in [
            ("[]", "body"),
            ("{", "body"),
            (r#"{"voice":"x"}"#, "input"),
            (
                r#"{"input":"Hi","response_format":"aac"}"#,
                "response_format",
            ),
            (r#"{"input":"Hi","speed":9}"#, "speed"),
            (r#"{"input":"Hi","sample_rate":44100}"#, "sample_rate"),
            (r#"{"input":"Hi","timestamps":true}"#, "timestamps"),
            (r#"{"input":"Hi","delivery":"slow"}"#, "delivery"),
        ] {
            assert_eq!(parse(body).expect_err(body).param, param, "{body}");
        }
        assert_eq!(
            parse(r#"{"input":"Hi","speed":9}"#)
                .expect_err("speed")
                .message,
            "speed must be between 0.25 and 4"
        );
    }
}
