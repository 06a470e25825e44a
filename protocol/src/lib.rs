//! The contract between clients and the orchestrator, typed once for
//! every side (see `docs/protocol.md`): clients serialise a
//! [`ClientMessage`] and the orchestrator reads it as a checked
//! [`Command`]; the orchestrator writes [`ServerMessage`]s and clients,
//! the load tester and the doctor read them. The HTTP endpoint's body and
//! errors ([`http`]) and the admin endpoints' bodies ([`admin`]) are here
//! too, and so is every range a request's options must keep.
//!
//! # Layout
//! - `codes`: [`ErrorCode`] and [`Outcome`].
//! - `server`: [`ServerMessage`].
//! - `client`: [`ClientMessage`] (the wire form) and [`Command`] (checked).
//! - `options`: [`RequestOptions`], [`Options`], [`RequestSpec`],
//!   [`Speed`], [`Noise`], [`Delivery`]; the ranges.
//! - `read`: reading a message field by field, naming the field at fault.
//! - [`http`]: `POST /v1/audio/speech` and `GET /v1/voices`.
//! - [`admin`]: `/info`, `/health`, `/ready`.
//! - `cutter`: where streamed text input is cut into clauses.

pub use tts_frame::{Encoding, Format, FormatError};

pub mod admin;
mod client;
mod codes;
mod cutter;
mod error;
pub mod http;
mod options;
mod read;
mod server;
#[cfg(test)]
mod tests;

pub use client::{ClientMessage, Command};
pub use codes::{ErrorCode, Outcome, UnknownCode};
pub use cutter::{Cutter, LONG_SENTENCE, MAX_CLAUSE};
pub use error::ParseError;
pub use options::{
    Delivery, NOISE_RANGE, Noise, Options, RangeError, RequestOptions, RequestSpec, SPEED_RANGE,
    Speed,
};
pub use server::{ServerMessage, VoiceEntry, WordTiming};

/// Protocol version announced in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;
