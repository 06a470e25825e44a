//! The one place where the worker's own types meet `tts.v1`: request ids
//! from metadata, checked request fields, frames, voices, load and every
//! status the service returns.

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tts_proto::v1::{self, AudioFrame, SynthesizeRequest};
use tts_proto::{
    ERROR_CODE_HEADER, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, TRACE_ID_HEADER, TRACEPARENT_HEADER,
    trace_id_from_traceparent,
};
use tts_telemetry::faults::{Component, Faults};

use crate::audio::Frame;
use crate::engine::VoiceInfo;
use crate::gpu::GpuInfo;
use crate::sched::Delivery;
use crate::synth::{Failure, RequestIds};
use crate::text::Prosody;

/// A status whose `tts-error-code` metadata names the client-facing code;
/// the gRPC code follows from it.
pub(crate) fn status(code: &'static str, message: impl Into<String>) -> Status {
    let grpc = match code {
        "bad_request" | "empty_text" | "text_too_long" => Code::InvalidArgument,
        "unknown_voice" => Code::NotFound,
        "overloaded" => Code::ResourceExhausted,
        "worker_unavailable" => Code::Unavailable,
        "client_too_slow" => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    let mut status = Status::new(grpc, message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_HEADER, MetadataValue::from_static(code));
    status
}

/// `status` with the `retry-after-ms` metadata.
pub(crate) fn with_retry_after(mut status: Status, retry_after: Duration) -> Status {
    if let Ok(v) = retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, v);
    }
    status
}

/// The request's ids: its fields, else its metadata (`x-request-id`,
/// `x-trace-id`, the trace of a W3C `traceparent`).
pub(crate) fn request_ids(meta: &MetadataMap, req: &SynthesizeRequest) -> RequestIds {
    let header = |key: &str| {
        meta.get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let or_header = |field: &str, fallback: Option<String>| {
        if field.is_empty() {
            fallback.unwrap_or_default()
        } else {
            field.to_owned()
        }
    };
    let traceparent = header(TRACEPARENT_HEADER);
    let trace_from_header = header(TRACE_ID_HEADER).or_else(|| {
        traceparent
            .as_deref()
            .and_then(trace_id_from_traceparent)
            .map(str::to_owned)
    });
    RequestIds {
        request_id: or_header(&req.request_id, header(REQUEST_ID_HEADER)),
        trace_id: or_header(&req.trace_id, trace_from_header),
        session_id: req.session_id.clone(),
    }
}

/// A request's speed and noise, checked against their ranges (a speed of
/// 0 is the voice's own).
pub(crate) fn prosody(req: &SynthesizeRequest) -> Result<Prosody, String> {
    let speed = if req.speed == 0.0 { 1.0 } else { req.speed };
    if !(0.25..=4.0).contains(&speed) {
        return Err(format!("speed must be between 0.25 and 4 (got {speed})"));
    }
    for (field, value) in [("noise_scale", req.noise_scale), ("noise_w", req.noise_w)] {
        if let Some(v) = value
            && !(0.0..=1.0).contains(&v)
        {
            return Err(format!("{field} must be between 0 and 1 (got {v})"));
        }
    }
    Ok(Prosody {
        speed,
        noise_scale: req.noise_scale,
        noise_w: req.noise_w,
    })
}

/// When the request's frames leave.
pub(crate) fn delivery(req: &SynthesizeRequest) -> Delivery {
    match req.delivery() {
        v1::Delivery::Realtime => Delivery::Realtime,
        v1::Delivery::Fast => Delivery::Fast,
    }
}

/// A frame as it leaves, stamped now; `voice` is named on the first only.
pub(crate) fn audio_frame(frame: Frame, voice: String) -> AudioFrame {
    AudioFrame {
        sequence: frame.sequence,
        payload: frame.payload,
        crc32c: frame.crc32c,
        last: frame.last,
        worker_ts_us: tts_frame::now_us(),
        samples: frame.samples,
        voice,
        words: frame.words,
    }
}

/// The status for a request that ended early, and its outcome (whose
/// doing it was).
pub(crate) fn failure(why: &Failure) -> (Status, &'static str) {
    let (code, outcome) = match why {
        Failure::NoAudio => ("empty_text", "client_error"),
        Failure::Stalled(_) => ("client_too_slow", "client_error"),
        Failure::ShuttingDown => ("worker_unavailable", "failed"),
        Failure::Engine(_) => ("internal", "failed"),
    };
    (status(code, why.to_string()), outcome)
}

/// A voice as `ListVoices` lists it.
pub(crate) fn voice(info: &VoiceInfo) -> v1::Voice {
    v1::Voice {
        name: info.name.clone(),
        engine: info.engine.into(),
        language: info.language.clone(),
        native_sample_rate: info.sample_rate,
        streaming: info.streaming,
        revision: info.revision.clone(),
        timestamps: info.timestamps,
    }
}

/// A GPU as `ListVoices` lists it.
pub(crate) fn gpu(g: &GpuInfo) -> v1::Gpu {
    v1::Gpu {
        index: g.index,
        name: g.name.clone(),
        compute_capability: g.compute_capability.clone(),
        total_memory_bytes: g.total_memory_bytes,
        free_memory_bytes: g.free_memory_bytes,
        driver_version: g.driver_version.clone(),
    }
}

/// The worker's injected faults as `GetLoad` reports them (an embedded
/// worker shares its registry with its orchestrator, which reports its own
/// kinds itself).
pub(crate) fn injected(faults: &Faults) -> Vec<v1::InjectedFault> {
    faults
        .list()
        .into_iter()
        .filter(|f| f.fault.component() == Component::Worker)
        .map(|f| {
            let mut params = serde_json::to_value(f.fault).unwrap_or_default();
            if let Some(map) = params.as_object_mut() {
                map.remove("kind");
            }
            v1::InjectedFault {
                kind: f.fault.kind().to_owned(),
                params_json: params.to_string(),
                remaining_s: f.remaining_s,
            }
        })
        .collect()
}
