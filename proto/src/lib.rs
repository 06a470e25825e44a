//! The `tts.v1` gRPC contract between orchestrator and worker, generated from
//! `proto/tts.proto` at build time, plus the metadata keys both sides use
//! and [`convert`], the one mapping between the wire and the contract's
//! own types.

#![allow(missing_docs, unreachable_pub)]

pub mod convert;

/// Generated messages, client and server for package `tts.v1`.
pub mod v1 {
    tonic::include_proto!("tts.v1");
}

/// gRPC metadata key carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// gRPC metadata key carrying the trace id as the client gave it (any
/// string; `traceparent` only carries W3C-shaped ids).
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// gRPC metadata key carrying W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// gRPC metadata key on error statuses naming the client-facing error code
/// (`empty_text`, `text_too_long`, `unknown_voice`, `overloaded`, ...).
pub const ERROR_CODE_HEADER: &str = "tts-error-code";
/// gRPC metadata key on `overloaded` statuses: milliseconds after which
/// the worker expects the request would be admitted.
pub const RETRY_AFTER_HEADER: &str = "retry-after-ms";

/// The service name `grpc.health.v1` reports on (besides `""`).
pub const HEALTH_SERVICE: &str = "tts.v1.Tts";

/// The trace id inside a W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`).
pub fn trace_id_from_traceparent(value: &str) -> Option<&str> {
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_traceparent() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_from_traceparent("garbage"), None);
        assert_eq!(
            trace_id_from_traceparent("00-xyz-00f067aa0ba902b7-01"),
            None
        );
    }
}
