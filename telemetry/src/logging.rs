//! Log output: one JSON object per line (default) or text for people.
//!
//! Every line carries `timestamp`, `level`, `component` (`worker`,
//! `orchestrator`, `client`, or the library's crate name), `target` and the
//! event's fields, flattened; request lines add `request_id`, `trace_id` and
//! `session_id` as fields of the event.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. `format` is `json` or `text`; the level
/// comes from `RUST_LOG` (default `info`). Logs go to stderr. With an
/// `otlp_endpoint`, request spans are also exported over OTLP as
/// `service` (needs the `otel` feature).
pub fn init_logging(
    format: &str,
    otlp_endpoint: Option<&str>,
    service: &'static str,
) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (json, text) = match format {
        "json" => (
            Some(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        "text" => (
            None,
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
        ),
        other => return Err(format!("unknown log format {other:?}; use json or text")),
    };
    let otel = crate::otel::layer(otlp_endpoint, service)?;
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())
}

/// The component a log target belongs to.
pub fn component(target: &str) -> &str {
    let krate = target.split("::").next().unwrap_or(target);
    krate.strip_prefix("tts_").unwrap_or(krate)
}

/// Formats each event as one JSON object.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        line.insert("timestamp".into(), Value::String(now.to_string()));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("component".into(), component(meta.target()).into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut Fields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_comes_from_the_crate() {
        assert_eq!(component("tts_worker::synth"), "worker");
        assert_eq!(component("tts_orchestrator"), "orchestrator");
        assert_eq!(component("h2::proto"), "h2");
    }
}
