//! The gRPC boundary's mapping to and from the contract's own types, in
//! one place for both sides: when frames leave ([`Delivery`]) and how a
//! refusal or failure travels (an [`ErrorCode`] in `tts-error-code`
//! metadata on a status whose gRPC code matches it, and `retry-after-ms`
//! on `overloaded`).

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tts_protocol::{Delivery, ErrorCode};

use crate::v1;
use crate::{ERROR_CODE_HEADER, RETRY_AFTER_HEADER};

/// The wire form of a delivery.
pub fn delivery_to_wire(d: Delivery) -> v1::Delivery {
    match d {
        Delivery::Realtime => v1::Delivery::Realtime,
        Delivery::Fast => v1::Delivery::Fast,
    }
}

/// A delivery from the wire (an unknown value is real time).
pub fn delivery_from_wire(d: i32) -> Delivery {
    match v1::Delivery::try_from(d) {
        Ok(v1::Delivery::Fast) => Delivery::Fast,
        _ => Delivery::Realtime,
    }
}

/// The gRPC code a contract error code travels under.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::BadRequest | ErrorCode::EmptyText | ErrorCode::TextTooLong => {
            Code::InvalidArgument
        }
        ErrorCode::UnknownVoice => Code::NotFound,
        ErrorCode::Overloaded | ErrorCode::RateLimited => Code::ResourceExhausted,
        ErrorCode::WorkerUnavailable | ErrorCode::ShuttingDown => Code::Unavailable,
        ErrorCode::ClientTooSlow => Code::DeadlineExceeded,
        ErrorCode::Internal => Code::Internal,
    }
}

/// A status saying `code` with `message`.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let mut status = Status::new(grpc_code(code), message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_HEADER, MetadataValue::from_static(code.as_str()));
    status
}

/// `status` with when to retry (an `overloaded` refusal).
pub fn with_retry_after(mut status: Status, after: Duration) -> Status {
    if let Ok(v) = after.as_millis().to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, v);
    }
    status
}

/// The contract's code a status carries, if it carries one.
pub fn error_code(status: &Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_wire)
}

/// When the worker expects a refused request would be admitted, ms.
pub fn retry_after_ms(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_travels_and_comes_back() {
        for code in ErrorCode::ALL {
            let s = status(code, "why");
            assert_eq!(error_code(&s), Some(code), "{code}");
            assert_eq!(s.code(), grpc_code(code));
            assert_eq!(s.message(), "why");
        }
        assert_eq!(status(ErrorCode::UnknownVoice, "").code(), Code::NotFound);
        let s = with_retry_after(
            status(ErrorCode::Overloaded, "full"),
            Duration::from_millis(250),
        );
        assert_eq!(retry_after_ms(&s), Some(250));
        assert_eq!(error_code(&Status::internal("no code")), None);
        for d in [Delivery::Realtime, Delivery::Fast] {
            assert_eq!(delivery_from_wire(delivery_to_wire(d) as i32), d);
        }
        assert_eq!(delivery_from_wire(99), Delivery::Realtime);
    }
}
