//! The one place where the worker's own types meet `tts.v1`: request ids
//! from metadata, checked request fields, frames, voices, load, and the
//! status of a request that ended early (codes travel as
//! `tts_proto::convert` says).

use tonic::Status;
use tonic::metadata::MetadataMap;
use tts_proto::convert;
use tts_proto::v1::{self, AudioFrame, SynthesizeRequest};
use tts_proto::{
    REQUEST_ID_HEADER, TRACE_ID_HEADER, TRACEPARENT_HEADER, trace_id_from_traceparent,
};
use tts_protocol::{Delivery, ErrorCode, Noise, Outcome, RangeError, Speed};
use tts_telemetry::faults::{Component, Faults};

use crate::audio::Frame;
use crate::engine::VoiceInfo;
use crate::gpu::GpuInfo;
use crate::request::{Prosody, RequestIds};
use crate::synth::Failure;

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
    let checked = |e: RangeError| {
        let RangeError {
            field,
            min,
            max,
            got,
        } = e;
        format!("{field} must be between {min} and {max} (got {got})")
    };
    let speed = if req.speed == 0.0 {
        Speed::default()
    } else {
        Speed::new(req.speed).map_err(checked)?
    };
    let noise = |field, value: Option<f32>| value.map(|v| Noise::new(field, v)).transpose();
    Ok(Prosody {
        speed,
        noise_scale: noise("noise_scale", req.noise_scale).map_err(checked)?,
        noise_w: noise("noise_w", req.noise_w).map_err(checked)?,
    })
}

/// When the request's frames leave.
pub(crate) fn delivery(req: &SynthesizeRequest) -> Delivery {
    convert::delivery_from_wire(req.delivery)
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
pub(crate) fn failure(why: &Failure) -> (Status, Outcome) {
    let code = match why {
        Failure::NoAudio => ErrorCode::EmptyText,
        Failure::Stalled(_) => ErrorCode::ClientTooSlow,
        Failure::ShuttingDown => ErrorCode::WorkerUnavailable,
        Failure::Engine(_) => ErrorCode::Internal,
    };
    (convert::status(code, why.to_string()), code.outcome())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(speed: f32, noise_scale: Option<f32>, noise_w: Option<f32>) -> SynthesizeRequest {
        SynthesizeRequest {
            speed,
            noise_scale,
            noise_w,
            ..SynthesizeRequest::default()
        }
    }

    #[test]
    fn out_of_range_prosody_names_the_field_its_range_and_the_value() {
        let refused = |r: SynthesizeRequest| prosody(&r).err();
        assert_eq!(
            refused(request(5.0, None, None)).as_deref(),
            Some("speed must be between 0.25 and 4 (got 5)")
        );
        assert_eq!(
            refused(request(1.0, Some(1.5), Some(2.0))).as_deref(),
            Some("noise_scale must be between 0 and 1 (got 1.5)")
        );
        assert_eq!(
            refused(request(1.0, None, Some(-0.5))).as_deref(),
            Some("noise_w must be between 0 and 1 (got -0.5)")
        );
        let p = prosody(&request(0.0, Some(0.3), None)).expect("in range");
        assert_eq!(p.speed, Speed::default(), "0 is the voice's own speed");
        assert_eq!(p.noise_scale.map(Noise::get), Some(0.3));
    }

    #[test]
    fn early_endings_travel_with_their_code_and_outcome() {
        let code = |why: Failure| {
            let (status, outcome) = failure(&why);
            (status.code(), convert::error_code(&status), outcome)
        };
        assert_eq!(
            code(Failure::Stalled(std::time::Duration::from_secs(1))),
            (
                tonic::Code::DeadlineExceeded,
                Some(ErrorCode::ClientTooSlow),
                Outcome::ClientError
            )
        );
        assert_eq!(
            code(Failure::ShuttingDown),
            (
                tonic::Code::Unavailable,
                Some(ErrorCode::WorkerUnavailable),
                Outcome::Failed
            )
        );
        assert_eq!(
            code(Failure::NoAudio),
            (
                tonic::Code::InvalidArgument,
                Some(ErrorCode::EmptyText),
                Outcome::ClientError
            )
        );
    }
}
