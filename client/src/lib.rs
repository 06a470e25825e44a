//! WebSocket client for the TTS orchestrator: speaks the protocol in
//! `docs/protocol.md`, verifies every frame (header, stream, sequence,
//! CRC-32C) and measures what a listener would: time to first audio and the
//! latency of each hop.

pub mod doctor;
pub mod jitter;
#[cfg(feature = "play")]
pub mod playback;
pub mod report;

mod client;
mod collector;
mod reconnect;
mod wav;

pub use client::{Client, ClientError, DeepPong, Event, SynthesizeOptions};
pub use collector::{Collector, FrameRecord, Utterance};
pub use reconnect::Reconnect;
pub use tts_protocol::{Encoding, ErrorCode, Format, ServerMessage};
pub use wav::write_wav;

pub use report::{Report, Summary};

/// Default orchestrator address.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws";
