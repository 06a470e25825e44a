//! Shared builders for the end-to-end tests: the real worker and
//! orchestrator on ephemeral loopback ports, and checks on received audio.
//!
//! # Layout
//! - `spawn`: the services in this process ([`spawn_pipeline`] and friends).
//! - `process`: the services as processes of their own ([`ServiceProcess`]).
//! - `redis`: a real Redis server ([`RedisServer`]).
//! - `http`, `ws`: the wire below the client library.
//! - `audio`: checks on received audio.
//! - `wait`: bounded waits ([`eventually`]) and what they wait for.
//! - [`chaos`]: faults injected from outside the product.

mod audio;
pub mod chaos;
mod http;
mod process;
mod redis;
mod spawn;
mod wait;
mod ws;

pub use audio::{assert_speech_like, decode, snr_db};
pub use http::{HttpAnswer, http_get, http_post, promtool_check_metrics, sample};
pub use process::{ServiceProcess, binary, free_port, python_json, repo_root, rss_bytes};
pub use redis::RedisServer;
pub use spawn::{
    ADMIN_TOKEN, Pipeline, Running, fault_registry, spawn_metered_pipeline, spawn_orchestrator,
    spawn_orchestrator_metered, spawn_orchestrator_with_grace, spawn_pipeline, spawn_worker,
    spawn_worker_on, worker_config,
};
pub use wait::{eventually, metric, voices_listed, worker_load, worker_serving};
pub use ws::{next_text_or_close, raw_ws, serve_traffic};

/// A medium English paragraph (~60 s of speech) for streaming tests.
pub const LONG_TEXT: &str = "The history of the telephone is a story of many inventors. \
In the eighteen seventies, several engineers raced to send the human voice over a wire, \
and each of them believed that he was the first. Early calls were faint and noisy, \
and operators had to shout to be heard across a town. Over the following decades, \
amplifiers, switching offices and undersea cables carried conversations across \
continents and oceans. Today a voice travels as a stream of small packets, each one \
checked, numbered and timed, so that a listener hears a steady sound even when the \
network beneath it is anything but steady. Engineers still measure the same things \
their predecessors cared about: how long it takes for the first sound to arrive, \
whether anything was lost on the way, and whether the words arrive in the right order.";

/// A few sentences (~15 s of speech).
pub const MEDIUM_TEXT: &str = "The history of the telephone is a story of many inventors. \
In the eighteen seventies, several engineers raced to send the human voice over a wire, \
and each of them believed that he was the first. Early calls were faint and noisy, \
and operators had to shout to be heard across a town.";
