//! Log output shared by the binaries: JSON lines by default, or text.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `json` or `text`; the level
/// comes from `RUST_LOG` (default `info`). Logs go to stderr.
pub fn init_logging(format: &str) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        "text" => builder.try_init(),
        other => return Err(format!("unknown log format {other:?}; use json or text")),
    };
    result.map_err(|e| e.to_string())
}
