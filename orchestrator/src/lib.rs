//! The orchestrator: accepts WebSocket clients, forwards their text to a TTS
//! worker over gRPC, verifies every frame that comes back and relays it,
//! with bounded queues at every hop.
//!
//! # Layout
//! - [`protocol`]: the WebSocket contract's JSON messages (the shared
//!   `tts-protocol` crate).
//! - `server`: the orchestrator's state, its routes, [`run`] and the
//!   shutdown drain.
//! - `session`: one connection (reader loop, writer task, queues).
//! - `relay`: one request's gRPC stream → the connection's queue.
//! - `admin`: `/health`, `/ready` (with the synthesis canary), `/info`
//!   (where the pipeline's parts are) and `/metrics`.
//! - [`config`]: flags and environment.

pub mod config;
pub mod metrics;

pub use tts_protocol as protocol;

mod admin;
mod admission;
mod app;
mod backoff;
mod cache;
mod context;
mod error;
mod frame;
mod http;
mod pool;
mod queue;
mod registry;
mod relay;
mod request;
mod security;
mod server;
mod session;
mod stop;
mod transcode;
mod voices;
mod writer;

pub use config::OrchestratorConfig;
pub use error::OrchestratorError;
pub use metrics::RelayStats;
pub use server::{Orchestrator, run};
