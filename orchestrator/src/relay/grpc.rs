//! The relay's side of the gRPC boundary: the requests it sends a worker
//! and what a worker's status means for the client. Codes, delivery and
//! retry hints are read and written through `tts_proto::convert`.

use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tts_proto::convert;
use tts_proto::v1::{SynthesizeRequest, Voice};
use tts_proto::{REQUEST_ID_HEADER, TRACE_ID_HEADER, TRACEPARENT_HEADER};

use super::Ending;
use crate::frame::Failure;
use crate::pool::Pool;
use crate::protocol::{Delivery, ErrorCode, VoiceEntry};
use crate::request::Request;

/// A request's `Synthesize` call: its text and options, with the worker
/// token, its ids and, for a W3C-shaped trace id, a `traceparent`.
pub(super) fn synthesize_request(
    pool: &Pool,
    req: &Request,
    text: &str,
) -> tonic::Request<SynthesizeRequest> {
    let mut grpc = pool.request(SynthesizeRequest {
        text: text.to_owned(),
        voice: req.voice.clone().unwrap_or_default(),
        request_id: req.ids.request_id.clone(),
        trace_id: req.ids.trace_id.clone(),
        session_id: req.ids.session_id.clone(),
        delivery: convert::delivery_to_wire(req.delivery) as i32,
        speed: req.options.speed,
        noise_scale: req.options.noise_scale,
        noise_w: req.options.noise_w,
        timestamps: req.options.timestamps,
    });
    let meta = grpc.metadata_mut();
    if let Ok(v) = req.ids.request_id.parse() {
        meta.insert(REQUEST_ID_HEADER, v);
    }
    if let Ok(v) = req.ids.trace_id.parse() {
        meta.insert(TRACE_ID_HEADER, v);
    }
    if is_w3c_trace_id(&req.ids.trace_id) {
        let span = random_id();
        if let Ok(v) = format!("00-{}-{span:016x}-01", req.ids.trace_id).parse() {
            meta.insert(TRACEPARENT_HEADER, v);
        }
    }
    grpc
}

/// The readiness canary's call: `text`, fast (the canary checks the
/// audio, not its pace), with ids of its own and the worker token.
pub(crate) fn canary_request(
    text: &str,
    auth: Option<MetadataValue<Ascii>>,
) -> tonic::Request<SynthesizeRequest> {
    let mut request = tonic::Request::new(SynthesizeRequest {
        text: text.into(),
        request_id: format!("canary-{}", uuid::Uuid::new_v4().simple()),
        trace_id: uuid::Uuid::new_v4().simple().to_string(),
        session_id: "canary".into(),
        voice: String::new(),
        delivery: convert::delivery_to_wire(Delivery::Fast) as i32,
        ..SynthesizeRequest::default()
    });
    if let Some(auth) = auth {
        request.metadata_mut().insert("authorization", auth);
    }
    request
}

/// A worker's voice as clients see it listed.
pub(crate) fn voice_entry(v: Voice) -> VoiceEntry {
    VoiceEntry {
        name: v.name,
        engine: v.engine,
        language: v.language,
        native_sample_rate: v.native_sample_rate,
        streaming: v.streaming,
        timestamps: v.timestamps,
    }
}

/// Maps a worker status to the client's error code: the worker's own
/// `tts-error-code` when it sent one. A status without one did not come
/// from the worker's service but from the way there (connection refused or
/// reset, HTTP/2 error, a header too large, a crash mid-stream): the
/// worker is unavailable.
pub(super) fn failure(status: &Status) -> Ending {
    match convert::error_code(status) {
        Some(ErrorCode::Overloaded) => Ending::Refused(Failure {
            code: ErrorCode::Overloaded,
            message: status.message().to_owned(),
            retry_after_ms: convert::retry_after_ms(status),
        }),
        Some(code) => Ending::Failed(Failure::new(code, status.message())),
        None => Ending::Failed(Failure::new(
            ErrorCode::WorkerUnavailable,
            format!("worker unavailable: {}", status.message()),
        )),
    }
}

/// Whether `id` can stand in a W3C `traceparent` (32 lowercase hex, not all zero).
pub(crate) fn is_w3c_trace_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

/// A random non-zero 64-bit number (a span id, a jitter).
pub(super) fn random_id() -> u64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    (hi ^ lo).max(1)
}

#[cfg(test)]
mod tests {
    use tts_proto::{ERROR_CODE_HEADER, RETRY_AFTER_HEADER};

    use super::*;

    #[test]
    fn worker_codes_win_over_grpc_codes() {
        let mut status = Status::invalid_argument("too long");
        status.metadata_mut().insert(
            ERROR_CODE_HEADER,
            tonic::metadata::MetadataValue::from_static("text_too_long"),
        );
        assert!(matches!(
            failure(&status),
            Ending::Failed(Failure {
                code: ErrorCode::TextTooLong,
                ..
            })
        ));
        // Whatever the transport says, without the worker's own code.
        for status in [
            Status::unavailable("tcp connect error"),
            Status::internal("h2 protocol error: stream reset"),
            Status::unknown("transport error"),
            Status::resource_exhausted("header list too large"),
        ] {
            assert!(
                matches!(
                    failure(&status),
                    Ending::Failed(Failure {
                        code: ErrorCode::WorkerUnavailable,
                        ..
                    })
                ),
                "{status:?}"
            );
        }
        let mut refused = Status::resource_exhausted("at capacity");
        let meta = refused.metadata_mut();
        meta.insert(ERROR_CODE_HEADER, "overloaded".parse().expect("ascii"));
        meta.insert(RETRY_AFTER_HEADER, "350".parse().expect("ascii"));
        assert!(matches!(
            failure(&refused),
            Ending::Refused(Failure {
                retry_after_ms: Some(350),
                ..
            })
        ));
        let mut internal = Status::internal("the engine failed");
        internal
            .metadata_mut()
            .insert(ERROR_CODE_HEADER, "internal".parse().expect("ascii"));
        assert!(matches!(
            failure(&internal),
            Ending::Failed(Failure {
                code: ErrorCode::Internal,
                ..
            })
        ));
    }

    #[test]
    fn only_w3c_trace_ids_travel_as_traceparent() {
        assert!(is_w3c_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_w3c_trace_id("00000000000000000000000000000000"));
        assert!(!is_w3c_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_w3c_trace_id("abc"));
    }
}
