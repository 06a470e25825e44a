//! Following one request's messages: every frame verified and decoded,
//! and the report built as they arrive.

use std::time::{Duration, Instant};

use tts_frame::{FrameHeader, Tally, Validator, bytes_to_samples, decode_frame, mulaw_decode};
use tts_protocol::{Encoding, Format, ServerMessage};

use crate::client::{ClientError, Event};
use crate::report::Report;

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
            ServerMessage::Error { code, message, .. } => {
                Err(ClientError::Server { code, message })
            }
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
        r.sample_rate = self.format.sample_rate;
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

/// Worker emit → orchestrator send and orchestrator send → now, in ms.
fn hop_latencies_ms(header: &FrameHeader) -> (f64, f64) {
    let now = tts_frame::now_us();
    let worker_hop = header
        .orchestrator_ts_us
        .saturating_sub(header.worker_ts_us);
    let client_hop = now.saturating_sub(header.orchestrator_ts_us);
    (worker_hop as f64 / 1e3, client_hop as f64 / 1e3)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
