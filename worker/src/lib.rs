//! The TTS worker: synthesises speech with a real engine and streams it over
//! gRPC as checksummed 20 ms frames of 48 kHz mono s16le.

pub mod audio;
pub mod engine;
pub mod text;
