//! The `tts.v1.Tts` gRPC service.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::info;
use tts_proto::v1::tts_server::Tts;
use tts_proto::v1::{
    AudioFrame, ListVoicesRequest, ListVoicesResponse, LoadReport, LoadRequest, SynthesizeRequest,
    Voice as VoiceMessage,
};
use tts_proto::{
    ERROR_CODE_HEADER, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, TRACE_ID_HEADER, TRACEPARENT_HEADER,
    trace_id_from_traceparent,
};
use tts_telemetry::faults::{Component, Faults};

use crate::drain::{Drain, DrainGuard};
use crate::engine::Voice;
use crate::metrics;
use crate::sched::Delivery;
use crate::synth::{Failure, RequestIds, Sent, SubmitError, SynthPool};
use crate::text::{Prosody, SplitOptions, split_clauses};

/// The voices and the threads that speak them, once loaded. The first
/// voice is the default.
pub(crate) struct Loaded {
    pub(crate) voices: Vec<Arc<dyn Voice>>,
    pub(crate) pool: Arc<SynthPool>,
    /// espeak-ng's languages, offered as voices `espeak-<language>`, with
    /// the identifiers of the espeak-ng voices that speak them.
    pub(crate) espeak_languages: Vec<(String, String)>,
}

/// The voices once loaded, and a signal for whoever waits for them.
pub(crate) struct LoadedVoices {
    loaded: OnceLock<Loaded>,
    /// Whether `loaded` is set; one value, overwritten.
    ready: watch::Sender<bool>,
}

impl LoadedVoices {
    pub(crate) fn new() -> Self {
        Self {
            loaded: OnceLock::new(),
            ready: watch::Sender::new(false),
        }
    }

    /// The voices, once loaded.
    pub(crate) fn get(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// The voices are loaded (a second set is ignored).
    pub(crate) fn set(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
        self.ready.send_replace(true);
    }

    /// Resolves with the voices once they are loaded.
    pub(crate) async fn wait(&self) -> Option<&Loaded> {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = ready.wait_for(|r| *r).await;
        self.loaded.get()
    }
}

/// The prefix of the voices that are espeak-ng languages.
const ESPEAK_PREFIX: &str = "espeak-";

impl Loaded {
    /// The voice's index and, for an espeak-ng language, the espeak-ng
    /// voice that speaks it.
    fn find_voice(&self, name: &str) -> Option<(usize, Option<String>)> {
        if name.is_empty() {
            return Some((0, None));
        }
        if let Some(i) = self.voices.iter().position(|v| v.info().name == name) {
            return Some((i, None));
        }
        let language = name.strip_prefix(ESPEAK_PREFIX)?;
        let espeak = self
            .voices
            .iter()
            .position(|v| v.info().engine == "espeak")?;
        self.espeak_languages
            .iter()
            .find(|(l, _)| l == language)
            .map(|(_, identifier)| (espeak, Some(identifier.clone())))
    }
}

/// Serves synthesis requests from the pool.
pub struct TtsService {
    pub(crate) loaded: Arc<LoadedVoices>,
    pub(crate) max_text_chars: usize,
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

/// A status whose `tts-error-code` metadata names the client-facing code.
pub(crate) fn coded(status: Status, code: &'static str) -> Status {
    let mut status = status;
    status.metadata_mut().insert(
        ERROR_CODE_HEADER,
        tonic::metadata::MetadataValue::from_static(code),
    );
    status
}

fn request_ids(meta: &MetadataMap, req: &SynthesizeRequest) -> RequestIds {
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

#[tonic::async_trait]
impl Tts for TtsService {
    type SynthesizeStream = Pin<Box<dyn Stream<Item = Result<AudioFrame, Status>> + Send>>;

    async fn synthesize(
        &self,
        request: Request<SynthesizeRequest>,
    ) -> Result<Response<Self::SynthesizeStream>, Status> {
        let received = Instant::now();
        let ids = request_ids(request.metadata(), request.get_ref());
        let req = request.into_inner();
        let reject = |status: Status, code: &'static str| {
            let outcome = if code == "worker_unavailable" {
                "failed"
            } else {
                "client_error"
            };
            metrics::request_finished(outcome);
            info!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                session_id = %ids.session_id, code, detail = status.message(), "request rejected");
            Err(coded(status, code))
        };
        if self.draining.load(Ordering::Relaxed) {
            return reject(
                Status::unavailable("worker is draining"),
                "worker_unavailable",
            );
        }
        let Some(loaded) = self.loaded.get() else {
            return reject(
                Status::unavailable("voices are still loading"),
                "worker_unavailable",
            );
        };
        let chars = req.text.chars().count();
        if chars > self.max_text_chars {
            let msg = format!(
                "text is {chars} characters; the limit is {}",
                self.max_text_chars
            );
            return reject(Status::invalid_argument(msg), "text_too_long");
        }
        let Some((voice, language)) = loaded.find_voice(&req.voice) else {
            let msg = format!("unknown voice {:?}", req.voice);
            return reject(Status::not_found(msg), "unknown_voice");
        };
        let prosody = match prosody(&req) {
            Ok(p) => p,
            Err(msg) => return reject(Status::invalid_argument(msg), "bad_request"),
        };
        if req.timestamps && !loaded.voices[voice].info().timestamps {
            let msg = format!(
                "timestamps: voice {:?} does not give word timestamps",
                req.voice
            );
            return reject(Status::invalid_argument(msg), "bad_request");
        }
        let mut clauses = split_clauses(&req.text, SplitOptions::default());
        for clause in &mut clauses {
            clause.prosody = prosody;
            clause.language.clone_from(&language);
            clause.timestamps = req.timestamps;
        }
        if clauses.is_empty() {
            return reject(
                Status::invalid_argument("text has nothing to speak"),
                "empty_text",
            );
        }
        let voice_name = match &language {
            Some(_) => req.voice.clone(),
            None => loaded.voices[voice].info().name.clone(),
        };
        let delivery = match req.delivery() {
            tts_proto::v1::Delivery::Realtime => Delivery::Realtime,
            tts_proto::v1::Delivery::Fast => Delivery::Fast,
        };
        let (tx, rx) = mpsc::channel(self.stream_queue_frames);
        let (abort_tx, abort) = oneshot::channel();
        let submitted = loaded
            .pool
            .submit(voice, clauses, delivery, ids.clone(), tx, abort_tx);
        match submitted {
            Ok(()) => {}
            Err(SubmitError::Overloaded { retry_after }) => {
                metrics::request_finished("refused");
                info!(request_id = %ids.request_id, trace_id = %ids.trace_id,
                    session_id = %ids.session_id, retry_after_ms = retry_after.as_millis() as u64,
                    "request refused: admitted streams would be late");
                let mut status =
                    Status::resource_exhausted(SubmitError::Overloaded { retry_after }.to_string());
                if let Ok(v) = retry_after.as_millis().to_string().parse() {
                    status.metadata_mut().insert(RETRY_AFTER_HEADER, v);
                }
                return Err(coded(status, "overloaded"));
            }
            Err(e @ SubmitError::TooLong { .. }) => {
                return reject(Status::invalid_argument(e.to_string()), "text_too_long");
            }
            Err(e @ SubmitError::Full(_)) => {
                metrics::request_finished("refused");
                return Err(coded(
                    Status::resource_exhausted(e.to_string()),
                    "overloaded",
                ));
            }
        }
        info!(request_id = %ids.request_id, trace_id = %ids.trace_id, session_id = %ids.session_id,
            voice = %voice_name, chars, "synthesis queued");
        Ok(Response::new(Box::pin(FrameStream {
            rx,
            abort: Some(abort),
            received,
            voice: Some(voice_name),
            ids,
            frames: 0,
            done: false,
            _drain: self.drain.guard(),
        })))
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
                    faults: injected(&self.faults),
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
        let voices = voice_messages(loaded);
        Ok(Response::new(ListVoicesResponse {
            voices,
            default_voice: loaded.voices[0].info().name.clone(),
            metrics_url: self.metrics_url.clone().unwrap_or_default(),
            device: self.device.to_string(),
            gpus: self
                .gpus
                .lock()
                .map(|g| g.iter().map(gpu_message).collect())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

/// The worker's injected faults as `GetLoad` reports them (an embedded
/// worker shares its registry with its orchestrator, which reports its own
/// kinds itself).
fn injected(faults: &Faults) -> Vec<tts_proto::v1::InjectedFault> {
    faults
        .list()
        .into_iter()
        .filter(|f| f.fault.component() == Component::Worker)
        .map(|f| {
            let mut params = serde_json::to_value(f.fault).unwrap_or_default();
            if let Some(map) = params.as_object_mut() {
                map.remove("kind");
            }
            tts_proto::v1::InjectedFault {
                kind: f.fault.kind().to_owned(),
                params_json: params.to_string(),
                remaining_s: f.remaining_s,
            }
        })
        .collect()
}

/// The response stream: stamps each frame as it leaves, and records the
/// request's first frame and outcome. Dropping it (the client went away)
/// drops the receiver, which stops synthesis.
struct FrameStream {
    rx: mpsc::Receiver<Sent>,
    /// Why the request ended early, read before any queued frame; `None`
    /// once its sender has gone.
    abort: Option<oneshot::Receiver<Failure>>,
    received: Instant,
    voice: Option<String>,
    ids: RequestIds,
    frames: u32,
    done: bool,
    /// Counts the stream as in progress until it is dropped.
    _drain: DrainGuard,
}

impl Stream for FrameStream {
    type Item = Result<AudioFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(why) = this.poll_abort(cx) {
            return Poll::Ready(Some(Err(this.failed(why))));
        }
        match std::task::ready!(this.rx.poll_recv(cx)) {
            Some(Sent::Frame(frame)) => {
                let voice = if this.frames == 0 {
                    metrics::first_frame(this.received.elapsed());
                    this.voice.take().unwrap_or_default()
                } else {
                    String::new()
                };
                this.frames += 1;
                if frame.last {
                    this.finish("completed");
                }
                Poll::Ready(Some(Ok(AudioFrame {
                    sequence: frame.sequence,
                    payload: frame.payload,
                    crc32c: frame.crc32c,
                    last: frame.last,
                    worker_ts_us: tts_frame::now_us(),
                    samples: frame.samples,
                    voice,
                    words: frame.words,
                })))
            }
            Some(Sent::Failed(why)) => Poll::Ready(Some(Err(this.failed(why)))),
            // The sender ended early: its reason is in the abort slot.
            None => match this.poll_abort(cx) {
                Some(why) => Poll::Ready(Some(Err(this.failed(why)))),
                None => Poll::Ready(None),
            },
        }
    }
}

impl FrameStream {
    /// The early ending, if one was said; the slot is let go once its
    /// sender has answered or gone.
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Option<Failure> {
        let slot = self.abort.as_mut()?;
        match Pin::new(slot).poll(cx) {
            Poll::Ready(result) => {
                self.abort = None;
                result.ok()
            }
            Poll::Pending => None,
        }
    }

    /// The status for a request that ended early, counted by whose doing
    /// it was.
    fn failed(&mut self, why: Failure) -> Status {
        let (status, code, outcome) = match &why {
            Failure::NoAudio => (
                Status::invalid_argument(why.to_string()),
                "empty_text",
                "client_error",
            ),
            Failure::Stalled(_) => (
                Status::deadline_exceeded(why.to_string()),
                "client_too_slow",
                "client_error",
            ),
            Failure::ShuttingDown => (
                Status::unavailable(why.to_string()),
                "worker_unavailable",
                "failed",
            ),
            Failure::Engine(e) => (Status::internal(e.to_string()), "internal", "failed"),
        };
        self.finish(outcome);
        coded(status, code)
    }

    fn finish(&mut self, outcome: &'static str) {
        self.done = true;
        metrics::request_finished(outcome);
        info!(request_id = %self.ids.request_id, trace_id = %self.ids.trace_id,
            session_id = %self.ids.session_id, frames = self.frames, outcome,
            elapsed_ms = self.received.elapsed().as_millis() as u64, "synthesis finished");
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        if !self.done {
            self.finish("cancelled");
        }
    }
}

/// A request's speed and noise, checked against their ranges.
fn prosody(req: &SynthesizeRequest) -> Result<Prosody, String> {
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

/// Every voice the worker speaks: its own, then every espeak-ng language.
fn voice_messages(loaded: &Loaded) -> Vec<VoiceMessage> {
    let mut voices: Vec<VoiceMessage> = loaded
        .voices
        .iter()
        .map(|v| {
            let info = v.info();
            VoiceMessage {
                name: info.name.clone(),
                engine: info.engine.into(),
                language: info.language.clone(),
                native_sample_rate: info.sample_rate,
                streaming: info.streaming,
                revision: info.revision.clone(),
                timestamps: info.timestamps,
            }
        })
        .collect();
    // Every espeak-ng language, as a voice of its own name.
    if let Some(espeak) = loaded.voices.iter().find(|v| v.info().engine == "espeak") {
        let rate = espeak.info().sample_rate;
        let revision = espeak.info().revision.clone();
        for (language, _) in &loaded.espeak_languages {
            let name = format!("{ESPEAK_PREFIX}{language}");
            if voices.iter().any(|v| v.name == name) {
                continue;
            }
            voices.push(VoiceMessage {
                name,
                engine: "espeak".into(),
                language: language.clone(),
                native_sample_rate: rate,
                streaming: false,
                revision: revision.clone(),
                timestamps: false,
            });
        }
    }
    voices
}

fn gpu_message(g: &crate::gpu::GpuInfo) -> tts_proto::v1::Gpu {
    tts_proto::v1::Gpu {
        index: g.index,
        name: g.name.clone(),
        compute_capability: g.compute_capability.clone(),
        total_memory_bytes: g.total_memory_bytes,
        free_memory_bytes: g.free_memory_bytes,
        driver_version: g.driver_version.clone(),
    }
}

/// The names of [`voice_messages`].
pub(crate) fn voice_names(loaded: &Loaded) -> Vec<String> {
    voice_messages(loaded).into_iter().map(|v| v.name).collect()
}
