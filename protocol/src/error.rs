//! Why a client message was refused.

use crate::FormatError;

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

impl From<crate::RangeError> for ParseError {
    fn from(e: crate::RangeError) -> Self {
        Self::Range {
            field: e.field,
            min: e.min,
            max: e.max,
        }
    }
}
