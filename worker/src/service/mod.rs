//! The `tts.v1.Tts` gRPC service: checks a request, submits it to the
//! synthesis pool and streams its frames back. `wire` is the only place
//! that maps the worker's types to and from `tts.v1`.

mod stream;
mod voices;
mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{Span, info};
use tts_proto::convert;
use tts_proto::v1::tts_server::Tts;
use tts_proto::v1::{
    AudioFrame, ListVoicesRequest, ListVoicesResponse, LoadReport, LoadRequest, SynthesizeRequest,
};
use tts_protocol::{ErrorCode, Outcome};
use tts_telemetry::faults::Faults;

use crate::drain::Drain;
use crate::metrics;
use crate::request::{RequestIds, Speech, SpeechRequest};
use crate::synth::{Output, SubmitError};
use crate::text::{Clause, SplitOptions, split_clauses};
use stream::FrameStream;
pub(crate) use voices::{Loaded, LoadedVoices};

/// Serves synthesis requests from the pool.
pub struct TtsService {
    pub(crate) loaded: Arc<LoadedVoices>,
    pub(crate) max_text_chars: usize,
    /// Frames released to a response stream and not yet taken by it.
    pub(crate) stream_queue_frames: usize,
    pub(crate) draining: Arc<AtomicBool>,
    /// What health reports: voices loaded, not draining, enough GPU memory.
    pub(crate) serving: Arc<AtomicBool>,
    /// Where the worker's metrics are served, if known.
    pub(crate) metrics_url: Option<String>,
    /// Where synthesis runs, and the GPUs as last seen.
    pub(crate) device: crate::gpu::Device,
    pub(crate) gpus: Arc<std::sync::Mutex<Vec<crate::gpu::GpuInfo>>>,
    /// Injected faults, reported by `GetLoad`.
    pub(crate) faults: Arc<Faults>,
    /// Counts the response streams in progress.
    pub(crate) drain: Drain,
}

/// A request turned away before synthesis: its client-facing code and
/// message.
struct Rejection {
    code: ErrorCode,
    message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A request that passed every check, ready for the pool.
struct Checked<'a> {
    loaded: &'a Loaded,
    request: SpeechRequest,
    clauses: Vec<Clause>,
    /// As the first frame names it.
    voice_name: String,
    chars: usize,
}

impl TtsService {
    /// Checks a request in the order its refusals are documented.
    fn check(&self, req: &SynthesizeRequest, ids: RequestIds) -> Result<Checked<'_>, Rejection> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Rejection::new(
                ErrorCode::WorkerUnavailable,
                "worker is draining",
            ));
        }
        let Some(loaded) = self.loaded.get() else {
            return Err(Rejection::new(
                ErrorCode::WorkerUnavailable,
                "voices are still loading",
            ));
        };
        let chars = req.text.chars().count();
        if chars > self.max_text_chars {
            let limit = self.max_text_chars;
            let msg = format!("text is {chars} characters; the limit is {limit}");
            return Err(Rejection::new(ErrorCode::TextTooLong, msg));
        }
        let (voice, speech) = speech(loaded, req)?;
        let clauses = split_clauses(&req.text, SplitOptions::default());
        if clauses.is_empty() {
            return Err(Rejection::new(
                ErrorCode::EmptyText,
                "text has nothing to speak",
            ));
        }
        let voice_name = match &speech.language {
            Some(_) => req.voice.clone(),
            None => loaded.voices[voice].info().name.clone(),
        };
        let request = SpeechRequest {
            ids,
            voice,
            speech,
            delivery: wire::delivery(req),
        };
        Ok(Checked {
            loaded,
            request,
            clauses,
            voice_name,
            chars,
        })
    }

    /// The status for a rejected request, counted and logged.
    fn reject(rejection: Rejection) -> Status {
        let Rejection { code, message } = rejection;
        metrics::request_finished(code.outcome());
        info!(
            code = code.as_str(),
            detail = message.as_str(),
            "request rejected"
        );
        convert::status(code, message)
    }

    /// The status for a request the pool did not admit.
    fn refuse(refused: SubmitError) -> Status {
        match refused {
            SubmitError::Overloaded { retry_after } => {
                metrics::request_finished(Outcome::Refused);
                info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "request refused: admitted streams would be late"
                );
                let status = convert::status(ErrorCode::Overloaded, refused.to_string());
                convert::with_retry_after(status, retry_after)
            }
            SubmitError::TooLong { .. } => {
                Self::reject(Rejection::new(ErrorCode::TextTooLong, refused.to_string()))
            }
            SubmitError::Full(_) => {
                metrics::request_finished(Outcome::Refused);
                convert::status(ErrorCode::Overloaded, refused.to_string())
            }
        }
    }

    /// Checks a request, submits it and opens its response stream; logs
    /// in the request's `span`, which the stream keeps.
    fn start(
        &self,
        req: &SynthesizeRequest,
        ids: RequestIds,
        received: Instant,
        span: &Span,
    ) -> Result<Response<<Self as Tts>::SynthesizeStream>, Status> {
        let Checked {
            loaded,
            request,
            clauses,
            voice_name,
            chars,
        } = self.check(req, ids).map_err(Self::reject)?;
        let (frames, rx) = mpsc::channel(self.stream_queue_frames);
        let (abort, abort_rx) = oneshot::channel();
        loaded
            .pool
            .submit(request, clauses, Output { frames, abort })
            .map_err(Self::refuse)?;
        info!(voice = %voice_name, chars, "synthesis queued");
        let (voice, guard) = (voice_name, self.drain.guard());
        let stream = FrameStream::new(rx, abort_rx, received, voice, span.clone(), guard);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The request's voice and how it is to be spoken, checked: the voice
/// exists, prosody is in range, and timestamps only from a voice that
/// gives them.
fn speech(loaded: &Loaded, req: &SynthesizeRequest) -> Result<(usize, Speech), Rejection> {
    let Some((voice, language)) = loaded.find_voice(&req.voice) else {
        let msg = format!("unknown voice {:?}", req.voice);
        return Err(Rejection::new(ErrorCode::UnknownVoice, msg));
    };
    let prosody = wire::prosody(req).map_err(|msg| Rejection::new(ErrorCode::BadRequest, msg))?;
    if req.timestamps && !loaded.voices[voice].info().timestamps {
        let msg = format!(
            "timestamps: voice {:?} does not give word timestamps",
            req.voice
        );
        return Err(Rejection::new(ErrorCode::BadRequest, msg));
    }
    let speech = Speech {
        prosody,
        language,
        timestamps: req.timestamps,
    };
    Ok((voice, speech))
}

#[tonic::async_trait]
impl Tts for TtsService {
    type SynthesizeStream = Pin<Box<dyn Stream<Item = Result<AudioFrame, Status>> + Send>>;

    async fn synthesize(
        &self,
        request: Request<SynthesizeRequest>,
    ) -> Result<Response<Self::SynthesizeStream>, Status> {
        let received = Instant::now();
        let ids = wire::request_ids(request.metadata(), request.get_ref());
        let span = ids.span();
        let req = request.into_inner();
        // Nothing here awaits: the span is entered for the checks, the
        // refusal and the pacer's start, and travels with the stream.
        span.in_scope(|| self.start(&req, ids, received, &span))
    }

    async fn get_load(
        &self,
        _request: Request<LoadRequest>,
    ) -> Result<Response<LoadReport>, Status> {
        let serving = self.serving.load(Ordering::Relaxed);
        let report = match self.loaded.get() {
            Some(loaded) => {
                let (streams, utilisation) = loaded.pool.load();
                LoadReport {
                    streams: streams as u32,
                    utilisation,
                    threads: loaded.pool.threads() as u32,
                    serving,
                    faults: wire::injected(&self.faults),
                }
            }
            None => LoadReport::default(),
        };
        Ok(Response::new(report))
    }

    async fn list_voices(
        &self,
        _request: Request<ListVoicesRequest>,
    ) -> Result<Response<ListVoicesResponse>, Status> {
        let Some(loaded) = self.loaded.get() else {
            return Err(Status::unavailable("voices are still loading"));
        };
        Ok(Response::new(ListVoicesResponse {
            voices: loaded.offered().iter().map(wire::voice).collect(),
            default_voice: loaded.default_voice().to_owned(),
            metrics_url: self.metrics_url.clone().unwrap_or_default(),
            device: self.device.to_string(),
            gpus: self
                .gpus
                .lock()
                .map(|g| g.iter().map(wire::gpu).collect())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}
