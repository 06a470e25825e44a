//! Log output: one JSON object per line (default) or text for people.
//!
//! Every line carries `timestamp`, `level`, `component` (`worker`,
//! `orchestrator`, `client`, or the library's crate name), `target` and the
//! event's fields, flattened. Request lines carry `request_id`, `trace_id`
//! and `session_id` from the spans they are logged in ([`SpanIds`]), so a
//! request's span is where its ids are written, once; a field of the event
//! itself wins over a span's.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
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
        .with(SpanIds)
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
        ctx: &FmtContext<'_, S, N>,
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
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(ids) = span.extensions().get::<Ids>() {
                    for (k, v) in &ids.0 {
                        line.insert((*k).into(), v.clone().into());
                    }
                }
            }
        }
        event.record(&mut Fields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The span fields every line inside a span carries.
const IDS: [&str; 3] = ["request_id", "trace_id", "session_id"];

/// A span's ids, kept in its extensions by [`SpanIds`].
#[derive(Debug, Default)]
struct Ids(Vec<(&'static str, String)>);

impl Ids {
    fn set(&mut self, name: &'static str, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Ids {
    fn record_str(&mut self, field: &Field, value: &str) {
        if IDS.contains(&field.name()) {
            self.set(field.name(), value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if IDS.contains(&field.name()) {
            self.set(field.name(), format!("{value:?}"));
        }
    }
}

/// Keeps each span's `request_id`, `trace_id` and `session_id`, so that
/// [`JsonLines`] writes them on every line logged inside the span.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanIds;

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut ids = Ids::default();
        attrs.record(&mut ids);
        if let (false, Some(span)) = (ids.0.is_empty(), ctx.span(id)) {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Ids>() {
            Some(ids) => values.record(ids),
            None => {
                let mut ids = Ids::default();
                values.record(&mut ids);
                if !ids.0.is_empty() {
                    extensions.insert(ids);
                }
            }
        }
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

    /// The JSON lines written while `f` runs.
    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(SpanIds).with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn a_span_s_ids_are_on_every_line_inside_it() {
        let written = lines(|| {
            let session = tracing::info_span!("session", session_id = "s1");
            let _s = session.enter();
            tracing::info!("connected");
            let request = tracing::info_span!("relay", request_id = %"r1", trace_id = "t1",
                stream_id = 3, text = "not copied");
            let _r = request.enter();
            tracing::info!(code = "none", "request finished");
            tracing::info!(request_id = "own", "an event's field wins");
            drop(_r);
            let late = tracing::info_span!("relay", request_id = tracing::field::Empty);
            late.record("request_id", "r2");
            late.in_scope(|| tracing::info!("recorded later"));
        });
        assert_eq!(written.len(), 4, "{written:?}");
        assert_eq!(written[0]["session_id"], "s1");
        assert!(written[0].get("request_id").is_none());
        let finished = &written[1];
        assert_eq!(
            (
                &finished["request_id"],
                &finished["trace_id"],
                &finished["session_id"]
            ),
            (&"r1".into(), &"t1".into(), &"s1".into())
        );
        assert_eq!(finished["message"], "request finished");
        assert!(finished.get("stream_id").is_none() && finished.get("text").is_none());
        assert_eq!(written[2]["request_id"], "own");
        assert_eq!(written[3]["request_id"], "r2");
    }

    #[test]
    fn component_comes_from_the_crate() {
        assert_eq!(component("tts_worker::synth"), "worker");
        assert_eq!(component("tts_orchestrator"), "orchestrator");
        assert_eq!(component("h2::proto"), "h2");
    }
}
