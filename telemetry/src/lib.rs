//! What the TTS binaries share for diagnostics and process life: JSON log
//! lines with a `component` field, the Prometheus recorder with explicit
//! histogram buckets and process metrics, shutdown signals, exit codes,
//! the built-in fault injection that chaos experiments use, CPU profiles
//! on demand, and the bounded HTTP listener every port is served by.

pub mod admin;
pub mod events;
pub mod exit;
pub mod faults;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod profile;
pub mod signal;

pub use admin::AdminConfig;
pub use logging::{SpanIds, init_logging};
pub use metrics::{MetricsHandle, install_metrics, serve_metrics};
