//! The `tts.v1` gRPC contract between orchestrator and worker, generated from
//! `proto/tts.proto` at build time, plus the metadata keys both sides use.

#![allow(missing_docs, unreachable_pub)]

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

/// How workers announce themselves in Redis: one key per worker,
/// [`registry::KEY_PREFIX`] + its URL, holding an [`registry::Entry`] as
/// JSON and expiring unless renewed (the heartbeat).
pub mod registry {
    /// Every worker's key starts with this.
    pub const KEY_PREFIX: &str = "tts:worker:";

    /// What a worker says about itself.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Entry {
        /// Where orchestrators reach its gRPC service.
        pub url: String,
        /// Its voices, as `ListVoices` names them.
        pub voices: Vec<String>,
        /// Synthesis threads.
        pub threads: u32,
        /// The worker's version.
        pub version: String,
    }

    /// How long one Redis command may take.
    pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

    /// A Redis connection that reconnects by itself, with every wait
    /// bounded by [`COMMAND_TIMEOUT`] (a dead server would otherwise hang
    /// calls).
    pub async fn connect(url: &str) -> Result<redis::aio::ConnectionManager, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| format!("no connection within {:?}", COMMAND_TIMEOUT * 2))?
        .map_err(|e| e.to_string())
    }

    /// The key of the worker at `url`.
    pub fn key(url: &str) -> String {
        format!("{KEY_PREFIX}{url}")
    }

    impl Entry {
        /// The entry as stored.
        pub fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }

        /// An entry as stored; `None` for anything else.
        pub fn from_json(text: &str) -> Option<Self> {
            serde_json::from_str(text).ok()
        }
    }
}

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
