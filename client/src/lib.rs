//! WebSocket client for the TTS orchestrator: speaks the protocol in
//! `docs/protocol.md`, verifies every frame (header, stream, sequence,
//! CRC-32C) and measures what a listener would: time to first audio and the
//! latency of each hop.

pub mod doctor;
pub mod jitter;
#[cfg(feature = "play")]
pub mod playback;
pub mod report;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tts_frame::{FrameHeader, Tally, Validator, bytes_to_samples, decode_frame, mulaw_decode};
pub use tts_protocol::{Encoding, ErrorCode, Format, ServerMessage};

pub use report::{Report, Summary};

/// Default orchestrator address.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws";

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect or the socket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered a request with `error`.
    #[error("server error {code}: {message}")]
    Server {
        /// The error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The connection closed before the request ended.
    #[error("connection closed before the request ended")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// One message from the server.
#[derive(Debug, Clone)]
pub enum Event {
    /// A text message of the protocol (`tts-protocol`).
    Message(ServerMessage),
    /// A JSON text message this client does not know (from a newer
    /// server): passed on, not an error.
    Other(Value),
    /// A binary frame: its raw bytes and when it arrived.
    Frame(Bytes, Instant),
}

/// An open connection to the orchestrator.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The server's `ready` message.
    pub ready: ServerMessage,
    /// Longest wait for any one message before giving up.
    pub timeout: Duration,
}

/// What to synthesise.
#[derive(Debug, Clone, Default)]
pub struct SynthesizeOptions {
    /// Voice name; the server's default when `None`.
    pub voice: Option<String>,
    /// Request id; generated when `None`.
    pub request_id: Option<String>,
    /// Trace id; the server generates one when `None`.
    pub trace_id: Option<String>,
    /// Ask for frames as fast as synthesis allows (`"delivery":"fast"`)
    /// instead of on the playout clock.
    pub fast: bool,
    /// Speaking rate (`speed`, 0.25 to 4); the voice's own when `None`.
    pub speed: Option<f32>,
    /// Piper's `noise_scale` (0 to 1); the voice's own when `None`.
    pub noise_scale: Option<f32>,
    /// Piper's `noise_w` (0 to 1); the voice's own when `None`.
    pub noise_w: Option<f32>,
    /// Frame encoding; `pcm_s16le` when `None`.
    pub encoding: Option<Encoding>,
    /// Frame sample rate; the encoding's default when `None`.
    pub sample_rate: Option<u32>,
    /// Ask for word timestamps (`words` messages).
    pub timestamps: bool,
}

/// A finished request: its audio and what was measured.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// The audio (decoded to PCM), trimmed to the exact sample count from
    /// `end`.
    pub samples: Vec<i16>,
    /// Its sample rate, Hz.
    pub sample_rate: u32,
    /// Measurements and verification counts.
    pub report: Report,
    /// Per-frame records, when the collector kept them.
    pub frames: Vec<FrameRecord>,
}

impl Client {
    /// Connects and waits for `ready`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;
        Self::handshake(ws).await
    }

    /// Speaks the protocol over a TCP stream the caller connected (to set
    /// socket options such as a small receive buffer).
    pub async fn connect_over(url: &str, tcp: TcpStream) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(tcp),
            Some(ws_config()),
        )
        .await?;
        Self::handshake(ws).await
    }

    async fn handshake(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ) -> Result<Self, ClientError> {
        let mut client = Self {
            ws,
            ready: ServerMessage::Ready {
                session_id: String::new(),
                protocol: 0,
                sample_rate: 0,
                channels: 0,
                frame_samples: 0,
                encoding: String::new(),
            },
            timeout: Duration::from_secs(30),
        };
        match client.next_event().await? {
            Event::Message(m @ ServerMessage::Ready { .. }) => client.ready = m,
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected ready, got {other:?}"
                )));
            }
        }
        Ok(client)
    }

    /// Sends a JSON message as it is.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.ws.send(Message::text(value.to_string())).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (for tests of bad input).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next text or binary message from the server.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let next = tokio::time::timeout(self.timeout, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(message) = ServerMessage::parse(t.as_str()) {
                        return Ok(Event::Message(message));
                    }
                    let v = serde_json::from_str(t.as_str())
                        .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))?;
                    return Ok(Event::Other(v));
                }
                Some(Ok(Message::Binary(b))) => return Ok(Event::Frame(b, Instant::now())),
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a `ping` and waits for its `pong`; returns the round-trip time.
    /// Other messages that arrive meanwhile are discarded.
    pub async fn ping(&mut self, id: u64) -> Result<Duration, ClientError> {
        let sent = Instant::now();
        self.send_json(&json!({"type": "ping", "id": id})).await?;
        loop {
            if let Event::Message(ServerMessage::Pong { id: got, .. }) = self.next_event().await?
                && got == id
            {
                return Ok(sent.elapsed());
            }
        }
    }

    /// Sends a `synthesize` request and returns its request id.
    pub async fn start(
        &mut self,
        text: &str,
        opts: &SynthesizeOptions,
    ) -> Result<String, ClientError> {
        let request_id = opts
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut msg = request_message("synthesize", &request_id, opts);
        msg["text"] = json!(text);
        self.send_json(&msg).await?;
        Ok(request_id)
    }

    /// Opens a context (streamed text input) and returns its request id;
    /// feed it with [`append`](Self::append), end it with
    /// [`close_context`](Self::close_context).
    pub async fn open_context(&mut self, opts: &SynthesizeOptions) -> Result<String, ClientError> {
        let request_id = opts
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.send_json(&request_message("context_open", &request_id, opts))
            .await?;
        Ok(request_id)
    }

    /// Appends a piece of text to a context.
    pub async fn append(&mut self, request_id: &str, text: &str) -> Result<(), ClientError> {
        self.send_json(&json!({"type": "append", "request_id": request_id, "text": text}))
            .await
    }

    /// Ends a context's text: its `end` follows its last audio.
    pub async fn close_context(&mut self, request_id: &str) -> Result<(), ClientError> {
        self.send_json(&json!({"type": "close", "request_id": request_id}))
            .await
    }

    /// Synthesises `text` and collects its audio, verifying every frame.
    pub async fn synthesize(
        &mut self,
        text: &str,
        opts: &SynthesizeOptions,
    ) -> Result<Utterance, ClientError> {
        let sent = Instant::now();
        let request_id = self.start(text, opts).await?;
        self.collect(Collector::new(request_id, sent)).await
    }

    /// Feeds server messages to `collector` until its request ends.
    pub async fn collect(&mut self, mut collector: Collector) -> Result<Utterance, ClientError> {
        loop {
            let event = self.next_event().await?;
            if let Some(done) = collector.on_event(event)? {
                return Ok(done);
            }
        }
    }
}

/// One frame as the client saw it (recorded by [`Collector::record_frames`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameRecord {
    /// Sequence number.
    pub sequence: u32,
    /// RMS level, dBFS (−inf as −200 for digital silence).
    pub rms_dbfs: f64,
    /// Largest sample magnitude.
    pub peak: u16,
    /// A run of 3 or more samples at full scale.
    pub clipping: bool,
    /// Every sample below 100.
    pub silent: bool,
    /// Mean sample value of the frame (for information: a 20 ms mean is
    /// not a DC offset).
    pub dc: f64,
    /// Quality events the stream raised at this frame (`clipping`,
    /// `dc_offset`, `dead_air`, `leading_silence`).
    pub events: Vec<&'static str>,
    /// Whether size, sequence and CRC-32C checked out.
    pub verified: bool,
    /// What failed, if anything.
    pub error: Option<String>,
    /// Worker emit → orchestrator send, ms.
    pub worker_to_orchestrator_ms: f64,
    /// Orchestrator send → client receipt, ms.
    pub orchestrator_to_client_ms: f64,
    /// Milliseconds since the request was sent.
    pub arrival_ms: f64,
}

/// Follows one request through the messages of a connection: checks each
/// of its frames and builds its report. Messages of other requests are
/// ignored, so several collectors can share one connection. Frames in any
/// format (`start` says which) are verified as they came and decoded to
/// PCM.
pub struct Collector {
    request_id: String,
    sent: Instant,
    stream_id: Option<u32>,
    validator: Validator,
    tally: Tally,
    samples: Vec<i16>,
    report: Report,
    frame_log: Option<Vec<FrameRecord>>,
    format: Format,
    opus: Option<opus::Decoder>,
    decoded: Vec<u8>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("request_id", &self.request_id)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Starts following `request_id`, sent at `sent`.
    pub fn new(request_id: String, sent: Instant) -> Self {
        Self {
            report: Report {
                request_id: request_id.clone(),
                ..Report::default()
            },
            request_id,
            sent,
            stream_id: None,
            validator: Validator::new(),
            tally: Tally::default(),
            samples: Vec::new(),
            frame_log: None,
            format: Format::PIPELINE,
            opus: None,
            decoded: Vec::new(),
        }
    }

    /// Also keeps a [`FrameRecord`] per frame.
    pub fn record_frames(mut self) -> Self {
        self.frame_log = Some(Vec::new());
        self
    }

    /// The request's audio so far, decoded to PCM (for playing it while
    /// it arrives).
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// The stream's format, once `start` arrived.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The frames recorded so far (empty unless [`record_frames`](Self::record_frames)).
    pub fn frames(&self) -> &[FrameRecord] {
        self.frame_log.as_deref().unwrap_or_default()
    }

    /// The request's stream id, once `start` arrived.
    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    /// Feeds one server message; returns the utterance when `end` arrives.
    pub fn on_event(&mut self, event: Event) -> Result<Option<Utterance>, ClientError> {
        match event {
            Event::Message(m) => self.on_message(m),
            Event::Other(_) => Ok(None),
            Event::Frame(bytes, at) => {
                self.on_frame(&bytes, at);
                Ok(None)
            }
        }
    }

    fn on_message(&mut self, message: ServerMessage) -> Result<Option<Utterance>, ClientError> {
        if message.request_id() != Some(self.request_id.as_str()) {
            return Ok(None);
        }
        match message {
            ServerMessage::Start {
                stream_id,
                trace_id,
                voice,
                sample_rate,
                encoding,
                ..
            } => {
                self.stream_id = Some(stream_id);
                self.report.trace_id = trace_id;
                self.report.voice = voice;
                let encoding = Encoding::from_wire(&encoding).ok_or_else(|| {
                    ClientError::Protocol(format!("start names an unknown encoding {encoding:?}"))
                })?;
                self.format = Format::negotiate(encoding, Some(sample_rate))
                    .map_err(|e| ClientError::Protocol(format!("start: {e}")))?;
                self.validator = Validator::for_format(self.format);
                if encoding == Encoding::Opus {
                    let decoder = opus::Decoder::new(sample_rate, opus::Channels::Mono)
                        .map_err(|e| ClientError::Protocol(format!("opus decoder: {e}")))?;
                    self.opus = Some(decoder);
                }
                Ok(None)
            }
            ServerMessage::End {
                frames,
                samples,
                cancelled,
                ..
            } => Ok(Some(self.finish(frames, samples, cancelled))),
            ServerMessage::Error { code, message, .. } => Err(ClientError::Server {
                code: code.as_str().to_owned(),
                message,
            }),
            ServerMessage::Words { words, .. } => {
                // A word whose frame has already come is late: the server
                // sends words before the frame in which they start.
                let played_ms = self.report.frames * 20;
                self.report.late_words += words
                    .iter()
                    .filter(|w| u64::from(w.start_ms) < played_ms)
                    .count() as u64;
                self.report.words.extend(words);
                Ok(None)
            }
            ServerMessage::Ready { .. }
            | ServerMessage::Pong { .. }
            | ServerMessage::Voices { .. } => Ok(None),
        }
    }

    fn on_frame(&mut self, bytes: &[u8], at: Instant) {
        let (header, payload) = match decode_frame(bytes) {
            Ok(decoded) => decoded,
            Err(_) => {
                self.tally.bad_size += 1;
                return;
            }
        };
        if Some(header.stream_id) != self.stream_id {
            return;
        }
        let checked = self
            .validator
            .check_bytes(header.sequence, header.crc32c, payload);
        let mut buf = std::mem::take(&mut self.decoded);
        let pcm = decode(
            self.format,
            self.opus.as_mut(),
            payload,
            checked.is_ok(),
            &mut buf,
        );
        let outcome = checked.map(|()| tts_frame::analyse(pcm));
        let events = self.tally.record(&outcome);
        if self.report.frames == 0 {
            self.report.time_to_first_audio_ms = ms(at - self.sent);
        }
        self.report.frames += 1;
        self.report.last_flag_seen |= header.last;
        let (worker_hop, client_hop) = hop_latencies_ms(&header);
        self.report.worker_to_orchestrator.add(worker_hop);
        self.report.orchestrator_to_client.add(client_hop);
        if let Some(log) = &mut self.frame_log {
            let stats = tts_frame::analyse(pcm);
            let q = stats.quality();
            log.push(FrameRecord {
                sequence: header.sequence,
                rms_dbfs: if stats.rms_dbfs.is_finite() {
                    stats.rms_dbfs
                } else {
                    -200.0
                },
                peak: stats.peak,
                clipping: q.clipping,
                silent: q.silence,
                dc: stats.mean,
                events: events.iter().map(|e| e.as_str()).collect(),
                verified: outcome.is_ok(),
                error: outcome.err().map(|e| e.to_string()),
                worker_to_orchestrator_ms: worker_hop,
                orchestrator_to_client_ms: client_hop,
                arrival_ms: ms(at - self.sent),
            });
        }
        self.samples.extend(bytes_to_samples(pcm));
        self.decoded = buf;
    }

    fn finish(&mut self, frames: u64, exact: u64, cancelled: bool) -> Utterance {
        let r = &mut self.report;
        r.cancelled = cancelled;
        r.end_frames = frames;
        r.end_samples = exact;
        self.samples.truncate(exact as usize);
        r.audio_seconds = self.samples.len() as f64 / f64::from(self.format.sample_rate);
        r.wall_seconds = self.sent.elapsed().as_secs_f64();
        r.real_time_factor = if r.audio_seconds > 0.0 {
            r.wall_seconds / r.audio_seconds
        } else {
            0.0
        };
        r.checksum_failures = self.tally.checksum_mismatch;
        r.sequence_failures = self.tally.out_of_sequence;
        r.malformed_frames = self.tally.bad_size;
        r.clipping_events = self.tally.clipping;
        r.dc_offset_events = self.tally.dc_offset;
        r.dead_air_events = self.tally.dead_air;
        r.leading_silence_events = self.tally.leading_silence;
        r.silent_frames = self.tally.silence;
        r.stream_id = self.stream_id.unwrap_or(0);
        Utterance {
            samples: std::mem::take(&mut self.samples),
            sample_rate: self.format.sample_rate,
            report: r.clone(),
            frames: self.frame_log.take().unwrap_or_default(),
        }
    }
}

/// A frame's audio as s16le PCM: the payload itself, or decoded from µ-law
/// or Opus into `buf` (a frame that failed its checks, or a packet the
/// decoder refuses, is concealed as a lost packet or silence).
fn decode<'a>(
    format: Format,
    opus: Option<&mut opus::Decoder>,
    payload: &'a [u8],
    intact: bool,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    buf.clear();
    match (format.encoding, opus) {
        (Encoding::PcmS16le, _) => return payload,
        (Encoding::Mulaw, _) => {
            for &b in payload {
                buf.extend_from_slice(&mulaw_decode(b).to_le_bytes());
            }
        }
        (Encoding::Opus, Some(decoder)) => {
            let mut pcm = [0i16; tts_frame::FRAME_SAMPLES];
            let packet: &[u8] = if intact { payload } else { &[] };
            let n = decoder.decode(packet, &mut pcm, false).unwrap_or(0);
            for s in &pcm[..n.min(pcm.len())] {
                buf.extend_from_slice(&s.to_le_bytes());
            }
        }
        (Encoding::Opus, None) => {}
    }
    buf
}

/// A `synthesize` or `context_open` message with the request's options.
fn request_message(kind: &str, request_id: &str, opts: &SynthesizeOptions) -> Value {
    let mut msg = json!({"type": kind, "request_id": request_id});
    if let Some(v) = &opts.voice {
        msg["voice"] = json!(v);
    }
    if let Some(t) = &opts.trace_id {
        msg["trace_id"] = json!(t);
    }
    if opts.fast {
        msg["delivery"] = json!("fast");
    }
    for (field, value) in [
        ("speed", opts.speed),
        ("noise_scale", opts.noise_scale),
        ("noise_w", opts.noise_w),
    ] {
        if let Some(v) = value {
            msg[field] = json!(v);
        }
    }
    if let Some(e) = opts.encoding {
        msg["encoding"] = json!(e.as_str());
    }
    if let Some(r) = opts.sample_rate {
        msg["sample_rate"] = json!(r);
    }
    if opts.timestamps {
        msg["timestamps"] = json!(true);
    }
    msg
}

/// Worker emit → orchestrator send and orchestrator send → now, in ms.
fn hop_latencies_ms(header: &FrameHeader) -> (f64, f64) {
    let now = tts_frame::now_us();
    let worker_hop = header
        .orchestrator_ts_us
        .saturating_sub(header.worker_ts_us);
    let client_hop = now.saturating_sub(header.orchestrator_ts_us);
    (worker_hop as f64 / 1e3, client_hop as f64 / 1e3)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes mono s16 samples at `sample_rate` as a WAV file.
pub fn write_wav(
    path: &std::path::Path,
    samples: &[i16],
    sample_rate: u32,
) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for &s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()
}
