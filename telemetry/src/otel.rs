//! Optional OpenTelemetry export of request spans over OTLP/gRPC (cargo
//! feature `otel`, flag `--otlp-endpoint`). Off by default. Spans carry the
//! request's W3C trace id, so a collector joins the orchestrator's and the
//! worker's spans of one request into one trace.

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The layer exporting spans to `endpoint`, when one is given.
pub(crate) fn layer<S>(
    endpoint: Option<&str>,
    service: &'static str,
) -> Result<Option<Box<dyn Layer<S> + Send + Sync>>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    imp::layer(endpoint, service).map(Some)
}

/// Makes `span` a child of the remote trace `trace_id` (32 hex digits), so
/// exported spans share the request's trace id. A no-op without the `otel`
/// feature or for other ids.
pub fn link_trace(span: &tracing::Span, trace_id: &str) {
    imp::link_trace(span, trace_id);
}

/// Flushes spans not yet exported (call before the process exits).
pub fn shutdown() {
    imp::shutdown();
}

#[cfg(feature = "otel")]
mod imp {
    use std::sync::OnceLock;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Subscriber;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub(super) fn layer<S>(
        endpoint: &str,
        service: &'static str,
    ) -> Result<Box<dyn Layer<S> + Send + Sync>, String>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = provider.tracer(service);
        let _ = PROVIDER.set(provider);
        Ok(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)))
    }

    pub(super) fn link_trace(span: &tracing::Span, trace_id: &str) {
        let Ok(trace) = TraceId::from_hex(trace_id) else {
            return;
        };
        if trace_id.len() != 32 || trace == TraceId::INVALID {
            return;
        }
        let span_id = SpanId::from(rand_span_id());
        let remote = SpanContext::new(
            trace,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    fn rand_span_id() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new()
            .hash_one(std::time::SystemTime::now())
            .max(1)
    }

    pub(super) fn shutdown() {
        if let Some(p) = PROVIDER.get() {
            let _ = p.shutdown();
        }
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    use tracing::Subscriber;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    pub(super) fn layer<S>(
        endpoint: &str,
        _service: &'static str,
    ) -> Result<Box<dyn Layer<S> + Send + Sync>, String>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        Err(format!(
            "--otlp-endpoint {endpoint}: this build has no OpenTelemetry export; rebuild with `--features otel`"
        ))
    }

    pub(super) fn link_trace(_span: &tracing::Span, _trace_id: &str) {}

    pub(super) fn shutdown() {}
}
