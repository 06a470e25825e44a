//! One request followed to its end, every frame recorded; and a
//! context's text sent piece by piece.

use std::time::{Duration, Instant};

use rand::Rng;
use tts_client::{Client, ClientError, Event, ServerMessage, SynthesizeOptions};
use tts_frame::{checksum, decode_frame};

use super::RunConfig;
use crate::record::{Arrival, integrity};
use crate::stats::RequestResult;

pub(super) fn pick(texts: &[String]) -> &str {
    if texts.is_empty() {
        return "Hello.";
    }
    &texts[rand::rng().random_range(0..texts.len())]
}

pub(super) fn failed(started: &Instant, scheduled: Instant, code: &str) -> RequestResult {
    RequestResult {
        scheduled_at: scheduled.duration_since(*started).as_secs_f64(),
        connect: None,
        ttfa: None,
        arrivals: Vec::new(),
        integrity: Default::default(),
        error: Some(code.to_owned()),
        ended: None,
        retry_after: None,
        audio_seconds: 0.0,
        completed_text: None,
    }
}

fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, .. } => code.to_string(),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::Closed => "closed".into(),
        ClientError::WebSocket(_) | ClientError::Connect { .. } => "websocket".into(),
        ClientError::Protocol(_) => "protocol".into(),
    }
}

/// Sends one request and follows it to its end, recording every frame.
pub(super) async fn one_request(
    client: &mut Client,
    config: &RunConfig,
    text: &str,
    scheduled: Instant,
    started: Instant,
) -> RequestResult {
    let mut result = failed(&started, scheduled, "protocol");
    let opts = SynthesizeOptions {
        voice: config.voice.clone(),
        fast: config.fast,
        ..SynthesizeOptions::default()
    };
    let started_request = match config.stream_input {
        None => client.start(text, &opts).await,
        Some(_) => client.open_context(&opts).await,
    };
    let request_id = match started_request {
        Ok(id) => id,
        Err(e) => {
            result.error = Some(error_code(&e));
            return result;
        }
    };
    let mut feed = config
        .stream_input
        .map(|interval| Feed::new(text, interval, scheduled));
    let mut seen = Seen::new(request_id, scheduled, result);
    loop {
        let next = feed.as_ref().and_then(Feed::next_at);
        let event = tokio::select! {
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()), if next.is_some() => {
                if let Some(f) = feed.as_mut()
                    && let Err(e) = f.send_next(client, &seen.request_id, &mut seen.result).await
                {
                    seen.result.error = Some(error_code(&e));
                    break;
                }
                continue;
            }
            event = client.next_event() => event,
        };
        let ended = match event {
            Ok(event) => seen.on_event(event),
            Err(e) => {
                seen.result.error = Some(error_code(&e));
                true
            }
        };
        if ended {
            break;
        }
    }
    seen.finish()
}

/// What one request's messages and frames have shown so far.
struct Seen {
    request_id: String,
    scheduled: Instant,
    stream_id: Option<u32>,
    /// Binary messages that are not frames.
    malformed: u64,
    /// The exact sample count `end` gave.
    samples: u64,
    result: RequestResult,
}

impl Seen {
    fn new(request_id: String, scheduled: Instant, result: RequestResult) -> Self {
        Self {
            request_id,
            scheduled,
            stream_id: None,
            malformed: 0,
            samples: 0,
            result,
        }
    }

    /// Takes one event; true once the request ended (`end` or `error`).
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Message(m) if m.request_id() == Some(self.request_id.as_str()) => {
                self.on_message(m)
            }
            Event::Message(_) | Event::Other(_) => false,
            Event::Frame(bytes, at) => {
                self.on_frame(&bytes, at);
                false
            }
        }
    }

    fn on_message(&mut self, message: ServerMessage) -> bool {
        match message {
            ServerMessage::Start { stream_id, .. } => {
                self.stream_id = Some(stream_id);
                false
            }
            ServerMessage::End {
                frames, samples, ..
            } => {
                let r = &mut self.result;
                self.samples = samples;
                r.integrity = integrity(&r.arrivals, frames, self.malformed);
                r.error = None;
                true
            }
            ServerMessage::Error {
                code,
                retry_after_ms,
                ..
            } => {
                self.result.error = Some(code.as_str().to_owned());
                self.result.retry_after = retry_after_ms.map(Duration::from_millis);
                true
            }
            _ => false,
        }
    }

    fn on_frame(&mut self, bytes: &[u8], at: Instant) {
        let now_us = tts_frame::now_us();
        let Ok((header, payload)) = decode_frame(bytes) else {
            self.malformed += 1;
            return;
        };
        if Some(header.stream_id) != self.stream_id {
            return;
        }
        self.result.arrivals.push(Arrival {
            sequence: header.sequence,
            at: at.saturating_duration_since(self.scheduled),
            worker_to_orchestrator_us: header
                .orchestrator_ts_us
                .saturating_sub(header.worker_ts_us),
            orchestrator_to_client_us: now_us.saturating_sub(header.orchestrator_ts_us),
            checksum_ok: checksum(payload) == header.crc32c,
        });
    }

    /// The result, timed and counted: a request that did not end counts
    /// only the frames that came.
    fn finish(self) -> RequestResult {
        let mut result = self.result;
        result.ended = Some(self.scheduled.elapsed());
        if result.error.is_some() {
            let received = result.arrivals.len() as u64;
            result.integrity = integrity(&result.arrivals, received, self.malformed);
        }
        result.ttfa = result.arrivals.first().map(|a| a.at);
        result.audio_seconds = self.samples as f64 / f64::from(tts_frame::SAMPLE_RATE);
        result
    }
}

/// A context's text, sent one word per piece on a clock, as a language
/// model writes it.
struct Feed {
    pieces: Vec<String>,
    sent: usize,
    interval: Duration,
    start: Instant,
    cutter: tts_protocol::Cutter,
}

impl Feed {
    fn new(text: &str, interval: Duration, start: Instant) -> Self {
        let pieces = text
            .split_inclusive(char::is_whitespace)
            .map(str::to_owned)
            .collect();
        Self {
            pieces,
            sent: 0,
            interval,
            start,
            cutter: tts_protocol::Cutter::default(),
        }
    }

    /// When the next piece (or, after the last, the `close`) is due.
    fn next_at(&self) -> Option<Instant> {
        (self.sent <= self.pieces.len()).then(|| self.start + self.interval * self.sent as u32)
    }

    /// Sends the next piece, or `close` after the last; notes in `result`
    /// when the text first held a complete clause (by the server's rule),
    /// the close counting as completing what is left.
    async fn send_next(
        &mut self,
        client: &mut Client,
        request_id: &str,
        result: &mut RequestResult,
    ) -> Result<(), ClientError> {
        let completes = match self.pieces.get(self.sent) {
            Some(piece) => {
                client.append(request_id, piece).await?;
                self.cutter.push(piece);
                !self.cutter.complete().is_empty()
            }
            None => {
                client.close_context(request_id).await?;
                true
            }
        };
        self.sent += 1;
        if completes && result.completed_text.is_none() {
            result.completed_text = Some(self.start.elapsed());
        }
        Ok(())
    }
}
