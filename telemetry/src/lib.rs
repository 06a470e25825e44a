//! What the TTS binaries share for diagnostics: JSON log lines with a
//! `component` field, the Prometheus recorder with explicit histogram
//! buckets, process metrics, and shutdown signals.

pub mod logging;
pub mod metrics;
pub mod otel;
pub mod process;
pub mod signal;

pub use logging::init_logging;
pub use metrics::{MetricsHandle, install_metrics, serve_metrics};
