//! How a request is spoken and delivered: the options as a client sends
//! them ([`RequestOptions`], unchecked, so that a client can send anything
//! and hear the server's answer) and as the server acts on them
//! ([`Options`], [`RequestSpec`]: checked once, here). Every range is
//! stated once, in this module.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::{Encoding, Format, ParseError};

/// The range of `speed`.
pub const SPEED_RANGE: RangeInclusive<f32> = 0.25..=4.0;
/// The range of `noise_scale` and `noise_w`.
pub const NOISE_RANGE: RangeInclusive<f32> = 0.0..=1.0;

/// A number outside its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field {field:?} must be between {min} and {max}")]
pub struct RangeError {
    /// The field.
    pub field: &'static str,
    /// Smallest accepted.
    pub min: f32,
    /// Largest accepted.
    pub max: f32,
    /// What was given.
    pub got: f32,
}

fn checked(field: &'static str, range: &RangeInclusive<f32>, v: f32) -> Result<f32, RangeError> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(RangeError {
            field,
            min: *range.start(),
            max: *range.end(),
            got: v,
        })
    }
}

/// A speaking rate within [`SPEED_RANGE`]: 1 is the voice's own, 2 twice
/// as fast.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Speed(f32);

impl Speed {
    /// `v`, if it is in range.
    pub fn new(v: f32) -> Result<Self, RangeError> {
        checked("speed", &SPEED_RANGE, v).map(Self)
    }

    /// The rate.
    pub fn get(self) -> f32 {
        self.0
    }
}

impl Default for Speed {
    fn default() -> Self {
        Self(1.0)
    }
}

/// One of Piper's noise scales (`noise_scale`, `noise_w`) within
/// [`NOISE_RANGE`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Noise(f32);

impl Noise {
    /// `v` for `field`, if it is in range.
    pub fn new(field: &'static str, v: f32) -> Result<Self, RangeError> {
        checked(field, &NOISE_RANGE, v).map(Self)
    }

    /// The scale.
    pub fn get(self) -> f32 {
        self.0
    }
}

/// When a request's frames leave the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// On the stream's playout clock (at most about 1 s ahead): for
    /// listeners.
    #[default]
    Realtime,
    /// As fast as synthesis allows, behind every stream due sooner: for
    /// downloads.
    Fast,
}

impl Delivery {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Fast => "fast",
        }
    }

    fn is_realtime(&self) -> bool {
        *self == Self::Realtime
    }
}

/// A request's header as a client sends it with `synthesize` or
/// `context_open`: every field optional and unchecked (the server checks,
/// and answers a bad value with `bad_request` naming the field).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestOptions {
    /// Client-chosen id; the server generates one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Client trace id; the server generates one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Voice name; the worker's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// When frames leave.
    #[serde(skip_serializing_if = "Delivery::is_realtime")]
    pub delivery: Delivery,
    /// Speaking rate, [`SPEED_RANGE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    /// Piper's phoneme noise, [`NOISE_RANGE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_scale: Option<f32>,
    /// Piper's duration noise, [`NOISE_RANGE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_w: Option<f32>,
    /// The frames' encoding; `pcm_s16le` when absent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "encoding_name"
    )]
    pub encoding: Option<Encoding>,
    /// The frames' sample rate; the encoding's own when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Ask for `words` messages.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timestamps: bool,
}

fn encoding_name<S: serde::Serializer>(e: &Option<Encoding>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(e.as_str()),
        None => s.serialize_none(),
    }
}

/// How a request is spoken and encoded, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Speaking rate: 1.0 is the voice's own, 2.0 twice as fast (within
    /// [`SPEED_RANGE`]).
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

impl Options {
    /// The speed, typed.
    pub fn speed(&self) -> Speed {
        Speed(self.speed)
    }
}

impl TryFrom<&RequestOptions> for Options {
    type Error = ParseError;

    /// Checks the ranges (speed, then each noise scale) and that the
    /// encoding and rate go together.
    fn try_from(o: &RequestOptions) -> Result<Self, ParseError> {
        let speed = o.speed.map(Speed::new).transpose()?.unwrap_or_default();
        let noise = |field, v: Option<f32>| v.map(|v| Noise::new(field, v)).transpose();
        let noise_scale = noise("noise_scale", o.noise_scale)?;
        let noise_w = noise("noise_w", o.noise_w)?;
        Ok(Self {
            speed: speed.get(),
            noise_scale: noise_scale.map(Noise::get),
            noise_w: noise_w.map(Noise::get),
            format: Format::negotiate(o.encoding.unwrap_or_default(), o.sample_rate)?,
            timestamps: o.timestamps,
        })
    }
}

/// A request's header, checked: what the server acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Client-chosen id; generated when absent.
    pub request_id: Option<String>,
    /// Client trace id; generated when absent.
    pub trace_id: Option<String>,
    /// Voice name; `None` for the worker's default.
    pub voice: Option<String>,
    /// When frames leave.
    pub delivery: Delivery,
    /// Speed, noise, encoding and rate.
    pub options: Options,
}

impl TryFrom<RequestOptions> for RequestSpec {
    type Error = ParseError;

    fn try_from(o: RequestOptions) -> Result<Self, ParseError> {
        let options = Options::try_from(&o)?;
        Ok(Self {
            request_id: o.request_id,
            trace_id: o.trace_id,
            voice: o.voice,
            delivery: o.delivery,
            options,
        })
    }
}
