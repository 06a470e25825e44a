//! The OpenAI-compatible speech endpoint, `POST /v1/audio/speech`, and
//! `GET /v1/voices`, on the client listener beside `/ws`.
//!
//! A request runs through the same relay as a WebSocket request (the same
//! admission checks, frame verification, metrics and trace ids); its
//! frames are written into a chunked response body as they arrive, so the
//! first bytes leave as early as the first WebSocket frame would. Until
//! the first frame the outcome is still open: a refusal or failure is an
//! HTTP error in OpenAI's error shape, with the WebSocket error code as
//! `code`. After it, a failure can only cut the body short (and is counted
//! and logged like any other).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::info;

use crate::admission::{Ask, Refusal};
use crate::app::App;
use crate::frame::{Failure, Frame, Item};
use crate::metrics;
use crate::metrics::RelayStats;
use crate::protocol::http::{Container, SpeechRequest};
use crate::protocol::{Delivery, ErrorCode, Format};
use crate::queue::{FrameReceiver, frame_queue};
use crate::relay::relay;
use crate::request::{Api, Request, RequestIds};
use crate::stop::{Stop, StopReason};

/// An error in OpenAI's shape.
fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    param: Option<&str>,
    retry_after_ms: Option<u64>,
) -> Response {
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "authentication_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(ms) = retry_after_ms
        && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::EmptyText
        | ErrorCode::TextTooLong
        | ErrorCode::UnknownVoice => StatusCode::BAD_REQUEST,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ClientTooSlow => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Overloaded | ErrorCode::WorkerUnavailable | ErrorCode::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn coded(code: ErrorCode, message: &str, param: Option<&str>, retry: Option<u64>) -> Response {
    error_response(status_of(code), code.as_str(), message, param, retry)
}

/// `POST /v1/audio/speech`.
pub(crate) async fn speech(
    State(shared): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err((status, reason, message)) =
        crate::security::check_handshake(&shared.config, &headers, query.as_deref())
    {
        metrics::connection_refused(reason);
        return error_response(status, reason, message, None, None);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // Over --max-message-bytes (413), or a body that could not be
            // read: answered in OpenAI's shape like any other refusal.
            let status = rejection.status();
            let message = format!(
                "the request body was refused: {} (the limit is {} bytes)",
                rejection.body_text(),
                shared.config.max_message_bytes
            );
            metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
            info!(%status, detail = %message, "http request refused");
            return error_response(
                status,
                ErrorCode::BadRequest.as_str(),
                &message,
                Some("input"),
                None,
            );
        }
    };
    let received = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    // Each HTTP request is its own session in the logs.
    let session_id = format!("http-{}", &request_id[..8]);
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tts_proto::trace_id_from_traceparent)
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let speech = match SpeechRequest::try_from(&body[..]) {
        Ok(s) => s,
        Err(tts_protocol::http::SpeechError {
            message,
            param: field,
        }) => {
            metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
            info!(%request_id, %trace_id, %session_id, field, detail = %message, "http request refused");
            return coded(ErrorCode::BadRequest, &message, Some(field), None);
        }
    };
    let admitted = shared.admission.admit(Ask {
        text: Some(&speech.input),
        voice: speech.voice.as_deref(),
        ids: &[],
        peer: peer.ip(),
        connection: None,
    });
    let permit = match admitted {
        Ok((permit, _)) => permit,
        Err(Refusal {
            code,
            message,
            retry_after_ms,
        }) => {
            metrics::request_finished(code.outcome(), Some(code));
            info!(%request_id, %trace_id, %session_id, code = code.as_str(), detail = %message,
                "http request refused");
            let param =
                matches!(code, ErrorCode::EmptyText | ErrorCode::TextTooLong).then_some("input");
            return coded(code, &message, param, retry_after_ms);
        }
    };
    info!(%request_id, %trace_id, %session_id, chars = speech.input.chars().count(),
        "http request accepted");
    let (tx, mut rx) = frame_queue(shared.config.client_queue_frames, Arc::clone(&shared.stats));
    let ids = RequestIds {
        request_id: request_id.clone(),
        trace_id: trace_id.clone(),
        session_id,
    };
    let mut req = Request::new(
        ids,
        1,
        speech.voice,
        Delivery::Realtime,
        speech.options,
        Api::Http,
    )
    .holding(permit);
    req.received = received;
    let stop = req.stop.clone();
    {
        let (shared, stop) = (Arc::clone(&shared), stop.clone());
        let ctx = Arc::clone(&shared.relay);
        tokio::spawn(async move {
            let relayed = relay(ctx, req, speech.input, tx);
            tokio::pin!(relayed);
            tokio::select! {
                _ = &mut relayed => {}
                _ = shared.force.cancelled() => {
                    stop.stop(StopReason::Failed(ErrorCode::ShuttingDown,
                        "the server shut down before the request could finish".into()));
                    relayed.await;
                }
            }
        });
    }
    // The response's status waits for the first frame (or the failure).
    let guard = DisconnectGuard(stop);
    loop {
        match rx.recv().await {
            Some(Item::Start { .. } | Item::Words { .. } | Item::Refused { .. }) => continue,
            Some(Item::Failed { failure, .. }) => {
                let Failure {
                    code,
                    message,
                    retry_after_ms,
                } = failure;
                return coded(code, &message, None, retry_after_ms);
            }
            Some(Item::Frame(first)) => {
                let format = speech.options.format;
                let stats = Arc::clone(&shared.stats);
                let mut body = BodyWriter::new(speech.container, format, stats);
                let head = body.push(first);
                return streaming_response(speech.container, format, head, rx, body, guard);
            }
            Some(Item::End { .. }) | None => {
                return coded(
                    ErrorCode::Internal,
                    "the request ended without audio",
                    None,
                    None,
                );
            }
        }
    }
}

/// Stops the request when the response body is dropped (the client left).
struct DisconnectGuard(Stop);

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        self.0.stop(StopReason::Disconnected);
    }
}

fn streaming_response(
    container: Container,
    format: Format,
    head: Vec<u8>,
    rx: FrameReceiver,
    body: BodyWriter,
    guard: DisconnectGuard,
) -> Response {
    enum State {
        Streaming {
            rx: FrameReceiver,
            body: BodyWriter,
            guard: DisconnectGuard,
        },
        Done,
    }
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let rest = futures::stream::unfold(State::Streaming { rx, body, guard }, |state| async move {
        let State::Streaming {
            mut rx,
            mut body,
            guard,
        } = state
        else {
            return None;
        };
        loop {
            match rx.recv().await {
                Some(Item::End { .. }) => {
                    let tail = body.finish();
                    return (!tail.is_empty()).then(|| (Ok(Bytes::from(tail)), State::Done));
                }
                Some(Item::Frame(frame)) => {
                    let bytes = body.push(frame);
                    if !bytes.is_empty() {
                        let next = State::Streaming { rx, body, guard };
                        return Some((Ok(Bytes::from(bytes)), next));
                    }
                }
                Some(Item::Start { .. } | Item::Words { .. } | Item::Refused { .. }) => {}
                Some(Item::Failed { .. }) | None => {
                    // The status is sent: cut the body short so that the
                    // client sees an incomplete response, not a short one.
                    let err = std::io::Error::other("the request failed after its first audio");
                    return Some((Err(err), State::Done));
                }
            }
        }
    });
    let content_type = match container {
        Container::Wav => "audio/wav".to_owned(),
        Container::Pcm => format!("audio/pcm;rate={};channels=1", format.sample_rate),
        Container::OggOpus => "audio/ogg;codecs=opus".to_owned(),
    };
    let mut response = Response::new(Body::from_stream(futures::StreamExt::chain(first, rest)));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert("x-sample-rate", HeaderValue::from(format.sample_rate));
    response
}

/// Turns frames into the response's bytes.
struct BodyWriter {
    container: Container,
    format: Format,
    ogg: Option<OggOpus>,
    started: bool,
    stats: Arc<RelayStats>,
}

impl BodyWriter {
    fn new(container: Container, format: Format, stats: Arc<RelayStats>) -> Self {
        Self {
            container,
            format,
            ogg: (container == Container::OggOpus).then(OggOpus::new),
            started: false,
            stats,
        }
    }

    /// The bytes for one frame (after the container's header, the first
    /// time).
    fn push(&mut self, frame: Frame) -> Vec<u8> {
        let Frame {
            payload,
            samples,
            received,
            ..
        } = frame;
        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        metrics::frame_sent(received.elapsed(), None);
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            match (self.container, &mut self.ogg) {
                (Container::Wav, _) => out.extend_from_slice(&wav_header(self.format.sample_rate)),
                (_, Some(ogg)) => ogg.headers(&mut out),
                _ => {}
            }
        }
        match &mut self.ogg {
            Some(ogg) => ogg.packet(&payload, samples, &mut out),
            None => {
                // Only the real samples of the last, padded frame.
                let real = (samples as usize * 2).min(payload.len());
                out.extend_from_slice(&payload[..real]);
            }
        }
        out
    }

    /// What ends the body.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(ogg) = &mut self.ogg {
            ogg.finish(&mut out);
        }
        out
    }
}

/// A streaming WAV header: mono s16le at `rate`, with the RIFF and data
/// lengths at their maximum, as streaming WAV writers do when the length
/// is not known yet (hound needs a seekable writer).
fn wav_header(rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// Ogg Opus (RFC 7845): the two header pages, then the packets. The first
/// audio page leaves at once; later pages carry three packets (60 ms), a
/// balance of latency and page overhead.
struct OggOpus {
    writer: ogg::PacketWriter<'static, Vec<u8>>,
    serial: u32,
    pre_skip: u16,
    granule: u64,
    packets: u64,
}

/// Audio packets per Ogg page after the first.
const PACKETS_PER_PAGE: u64 = 3;

impl OggOpus {
    fn new() -> Self {
        // libopus's encoder delay at 48 kHz (VoIP), which decoders skip.
        let pre_skip = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .and_then(|mut e| e.get_lookahead())
            .map_or(312, |n| n as u16);
        Self {
            writer: ogg::PacketWriter::new(Vec::new()),
            serial: rand_serial(),
            pre_skip,
            granule: u64::from(pre_skip),
            packets: 0,
        }
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(self.writer.inner_mut());
    }

    fn headers(&mut self, out: &mut Vec<u8>) {
        use ogg::PacketWriteEndInfo::EndPage;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        let vendor = concat!("tts-orchestrator ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes());
        // Writing into a Vec cannot fail.
        let _ = self.writer.write_packet(head, self.serial, EndPage, 0);
        let _ = self.writer.write_packet(tags, self.serial, EndPage, 0);
        self.take(out);
    }

    fn packet(&mut self, packet: &[u8], samples: u32, out: &mut Vec<u8>) {
        use ogg::PacketWriteEndInfo::{EndPage, NormalPacket};
        self.granule += u64::from(samples);
        self.packets += 1;
        let end = if self.packets == 1 || self.packets.is_multiple_of(PACKETS_PER_PAGE) {
            EndPage
        } else {
            NormalPacket
        };
        let _ = self
            .writer
            .write_packet(packet.to_vec(), self.serial, end, self.granule);
        self.take(out);
    }

    /// Ends the stream: an empty last page with the final granule (the
    /// packets' real samples, so the padding of the last frame is trimmed).
    fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = self.writer.write_packet(
            Vec::new(),
            self.serial,
            ogg::PacketWriteEndInfo::EndStream,
            self.granule,
        );
        self.take(out);
    }
}

fn rand_serial() -> u32 {
    uuid::Uuid::new_v4().as_u64_pair().0 as u32
}

/// `GET /v1/voices`.
pub(crate) async fn voices(State(shared): State<Arc<App>>) -> Response {
    match crate::voices::list(&shared.relay.pool).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => coded(e.code(), &e.to_string(), None, None),
    }
}

/// `GET /`: the browser page (plain HTML and JS from `orchestrator/web/`,
/// built into the binary).
pub(crate) async fn page() -> Response {
    static_file(
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    )
}

/// `GET /player-worklet.js`: the page's AudioWorklet.
pub(crate) async fn worklet() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../web/player-worklet.js"),
    )
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wav_header_describes_mono_s16() {
        let h = wav_header(24_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 24_000);
        assert_eq!(u16::from_le_bytes([h[34], h[35]]), 16);
    }
}
