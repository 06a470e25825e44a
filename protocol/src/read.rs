//! Reading a client message from JSON, field by field, so that a refusal
//! names the field: `text`, `voice`, `request_id`, `trace_id`, `delivery`,
//! `encoding`, `sample_rate`, `timestamps`, `speed`, `noise_scale`,
//! `noise_w`, in that order (ranges and formats are checked afterwards,
//! by [`crate::Options`]). `null` is as good as absent; an empty `voice`,
//! `request_id` or `trace_id` is absent; unknown fields are ignored.

use serde_json::{Map, Value};

use crate::{ClientMessage, Delivery, Encoding, ParseError, RequestOptions};

type Object = Map<String, Value>;

/// The message in `value`.
pub(crate) fn message(value: Value) -> Result<ClientMessage, ParseError> {
    let Value::Object(obj) = value else {
        return Err(ParseError::NotObject);
    };
    let kind = match obj.get("type") {
        None if obj.contains_key("text") => "synthesize",
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(field("type", "string")),
    };
    Ok(match kind {
        "synthesize" => ClientMessage::Synthesize {
            text: required(&obj, "text")?,
            options: request_options(&obj)?,
        },
        "voices" => ClientMessage::Voices,
        "context_open" => ClientMessage::ContextOpen {
            options: request_options(&obj)?,
        },
        "append" => ClientMessage::Append {
            request_id: required(&obj, "request_id")?,
            text: required(&obj, "text")?,
        },
        "flush" => ClientMessage::Flush {
            request_id: required(&obj, "request_id")?,
        },
        "close" => ClientMessage::Close {
            request_id: required(&obj, "request_id")?,
        },
        "ping" => match obj.get("id") {
            Some(id @ (Value::Number(_) | Value::String(_))) => ClientMessage::Ping {
                id: id.clone(),
                deep: obj.get("deep").and_then(Value::as_bool).unwrap_or(false),
            },
            _ => return Err(field("id", "number")),
        },
        "cancel" => ClientMessage::Cancel {
            request_id: required(&obj, "request_id")?,
        },
        other => return Err(ParseError::UnknownType(other.to_owned())),
    })
}

fn field(field: &'static str, expected: &'static str) -> ParseError {
    ParseError::Field { field, expected }
}

fn string(obj: &Object, name: &'static str) -> Result<Option<String>, ParseError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field(name, "string")),
    }
}

fn required(obj: &Object, name: &'static str) -> Result<String, ParseError> {
    string(obj, name)?.ok_or(field(name, "string"))
}

fn non_empty(obj: &Object, name: &'static str) -> Result<Option<String>, ParseError> {
    Ok(string(obj, name)?.filter(|v| !v.is_empty()))
}

fn number(obj: &Object, name: &'static str) -> Result<Option<f32>, ParseError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_f64().unwrap_or(f64::NAN) as f32)),
        Some(_) => Err(field(name, "number")),
    }
}

fn delivery(obj: &Object) -> Result<Delivery, ParseError> {
    match string(obj, "delivery")?.as_deref() {
        None | Some("realtime") => Ok(Delivery::Realtime),
        Some("fast") => Ok(Delivery::Fast),
        Some(_) => Err(ParseError::Value {
            field: "delivery",
            allowed: "\"realtime\", \"fast\"",
        }),
    }
}

fn encoding(obj: &Object) -> Result<Option<Encoding>, ParseError> {
    match obj.get("encoding") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(e)) => Encoding::from_wire(e).map(Some).ok_or(ParseError::Value {
            field: "encoding",
            allowed: "\"pcm_s16le\", \"opus\", \"mulaw\"",
        }),
        Some(_) => Err(field("encoding", "string")),
    }
}

fn sample_rate(obj: &Object) -> Result<Option<u32>, ParseError> {
    match obj.get("sample_rate") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .map(Some)
            .ok_or(field("sample_rate", "whole number")),
    }
}

fn timestamps(obj: &Object) -> Result<bool, ParseError> {
    match obj.get("timestamps") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(field("timestamps", "boolean")),
    }
}

/// The request header of a `synthesize` or `context_open` (also the
/// options of the HTTP endpoint's JSON body).
pub(crate) fn request_options(obj: &Object) -> Result<RequestOptions, ParseError> {
    Ok(RequestOptions {
        voice: non_empty(obj, "voice")?,
        request_id: non_empty(obj, "request_id")?,
        trace_id: non_empty(obj, "trace_id")?,
        delivery: delivery(obj)?,
        encoding: encoding(obj)?,
        sample_rate: sample_rate(obj)?,
        timestamps: timestamps(obj)?,
        speed: number(obj, "speed")?,
        noise_scale: number(obj, "noise_scale")?,
        noise_w: number(obj, "noise_w")?,
    })
}
