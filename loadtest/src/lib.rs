//! `tts-loadtest`: drives many concurrent streams against the orchestrator
//! and measures what listeners hear: time to first audio, ping RTT,
//! inter-frame gaps, per-hop latency, playout underruns against jitter
//! buffers, and frame integrity. Percentiles come from HDR histograms.
//!
//! # Layout
//! - [`run`]: closed- and open-loop workloads, the ping side channel.
//! - [`record`]: one request's arrivals, playout lateness, integrity.
//! - [`stats`]: aggregation and the JSON report (`schema.json`).
//! - [`report`], [`plot`], [`capacity`]: text output, `--compare`,
//!   `--plot`, `--find-capacity`.
//! - [`corpus`]: the built-in texts.

pub mod capacity;
pub mod corpus;
pub mod plot;
pub mod record;
pub mod report;
pub mod run;
pub mod stats;
