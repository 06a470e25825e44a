//! One WebSocket connection: a reader loop that parses client messages and
//! starts relays, and a writer task that owns the socket's send half.
//!
//! The writer serves two queues: control messages (`ready`, `pong`,
//! immediate errors) first, then the bounded data queue (`start`, frames,
//! `end`, request errors) in order. A pong therefore never waits behind
//! queued audio.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use tts_frame::{FRAME_SAMPLES, SAMPLE_RATE, encode_frame};

use crate::config::OrchestratorConfig;
use crate::metrics::{self, RelayStats};
use crate::protocol::{ClientMessage, Delivery, ErrorCode, PROTOCOL_VERSION, ServerMessage};
use crate::relay::{Outgoing, Pending, RelayContext, relay};

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) config: OrchestratorConfig,
    pub(crate) relay: Arc<RelayContext>,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) inflight: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the grace period is over: close whatever is left.
    pub(crate) force: CancellationToken,
}

/// Close code for a client that keeps sending bad messages.
const CLOSE_POLICY: u16 = 1008;
/// Close code on server shutdown.
const CLOSE_GOING_AWAY: u16 = 1001;

struct Active {
    cancel: CancellationToken,
}

/// How long a closing connection's writer may take to flush what is
/// queued before it is stopped.
const CLOSE_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one connection until the client leaves or the server drains.
pub(crate) async fn serve(socket: WebSocket, shared: Arc<Shared>, trace_hint: Option<String>) {
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    shared.stats.connection_opened();
    info!(%session_id, "connection opened");
    let (sink, stream) = socket.split();
    let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
    let (data_tx, data_rx) = mpsc::channel(shared.config.client_queue_frames);
    let mut writer = tokio::spawn(write_loop(
        sink,
        ctrl_rx,
        data_rx,
        Arc::clone(&shared.stats),
    ));
    let ready = ServerMessage::Ready {
        session_id: session_id.clone(),
        protocol: PROTOCOL_VERSION,
        sample_rate: SAMPLE_RATE,
        channels: 1,
        frame_samples: FRAME_SAMPLES as u32,
        encoding: "pcm_s16le",
    };
    let mut closing = None;
    if ctrl_tx.send(Control::Message(ready)).await.is_ok() {
        let mut conn = Connection {
            shared: &shared,
            session_id: &session_id,
            trace_hint,
            ctrl: ctrl_tx.clone(),
            data: data_tx.clone(),
            active: HashMap::new(),
            tasks: JoinSet::new(),
            next_stream_id: 1,
            bad_messages: 0,
        };
        closing = conn.run(stream).await;
        conn.finish().await;
    }
    let close_requested = closing.is_some();
    match closing {
        // After everything already queued for the client.
        Some(Closing::Drain(frame)) => {
            let _ = data_tx.send(Outgoing::Close(frame)).await;
        }
        Some(Closing::Now(frame)) => {
            let _ = ctrl_tx.send(Control::Close(frame)).await;
        }
        // The client is gone: the control queue closes below, which stops
        // the writer.
        None => {}
    }
    // While a close is pending the control queue stays open, so that the
    // writer flushes the data queue up to the close instead of stopping.
    let keep_open = close_requested.then_some(ctrl_tx);
    drop(data_tx);
    let flushed = tokio::select! {
        _ = &mut writer => true,
        _ = shared.force.cancelled() => false,
        _ = tokio::time::sleep(CLOSE_FLUSH_LIMIT) => false,
    };
    if !flushed {
        writer.abort();
    }
    drop(keep_open);
    shared.stats.connection_closed();
    info!(%session_id, "connection closed");
}

/// How the server ends a connection.
enum Closing {
    /// After the frames and messages already queued.
    Drain(CloseFrame),
    /// At once (the shutdown grace period is over).
    Now(CloseFrame),
}

/// What the reader asks the writer to do outside the data queue.
enum Control {
    Message(ServerMessage),
    Close(CloseFrame),
}

struct Connection<'a> {
    shared: &'a Shared,
    session_id: &'a str,
    trace_hint: Option<String>,
    ctrl: mpsc::Sender<Control>,
    data: mpsc::Sender<Outgoing>,
    active: HashMap<String, Active>,
    tasks: JoinSet<String>,
    next_stream_id: u32,
    bad_messages: u32,
}

impl Connection<'_> {
    /// Reads until the client closes, misbehaves or the server drains with
    /// nothing in flight; returns how to close, if the server closes.
    async fn run(
        &mut self,
        mut stream: futures::stream::SplitStream<WebSocket>,
    ) -> Option<Closing> {
        let shutdown = self.shared.shutdown.clone();
        let force = self.shared.force.clone();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(close) = self.on_text(text.as_str()).await {
                            return Some(close);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let err = ServerMessage::error(ErrorCode::BadRequest,
                            "binary messages are not accepted from clients", None);
                        if let Some(close) = self.bad_message(err).await {
                            return Some(close);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => {} // WebSocket ping/pong: answered by the library.
                    Some(Err(e)) => {
                        debug!(session_id = %self.session_id, error = %e, "read failed");
                        return None;
                    }
                },
                Some(done) = self.tasks.join_next() => {
                    if let Ok(request_id) = done {
                        self.active.remove(&request_id);
                    }
                    self.update_inflight(-1);
                }
                _ = shutdown.cancelled(), if self.active.is_empty() => {
                    let frame = CloseFrame { code: CLOSE_GOING_AWAY, reason: "server shutting down".into() };
                    return Some(Closing::Drain(frame));
                }
                _ = force.cancelled() => {
                    let frame = CloseFrame { code: CLOSE_GOING_AWAY, reason: "server shut down".into() };
                    return Some(Closing::Now(frame));
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<Closing> {
        let message = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let err = ServerMessage::error(ErrorCode::BadRequest, e.to_string(), None);
                return self.bad_message(err).await;
            }
        };
        self.bad_messages = 0;
        match message {
            ClientMessage::Ping { id, deep: false } => {
                let pong = ServerMessage::Pong {
                    id,
                    server_time_us: tts_frame::now_us(),
                    worker_rtt_us: None,
                    worker_status: None,
                };
                let _ = self.ctrl.send(Control::Message(pong)).await;
            }
            ClientMessage::Ping { id, deep: true } => {
                // The gRPC round trip runs beside the reader, which keeps
                // serving this connection meanwhile.
                let (channel, ctrl) = (self.shared.relay.channel.clone(), self.ctrl.clone());
                tokio::spawn(async move {
                    let (rtt, status) = deep_ping(channel).await;
                    let pong = ServerMessage::Pong {
                        id,
                        server_time_us: tts_frame::now_us(),
                        worker_rtt_us: Some(rtt),
                        worker_status: Some(status),
                    };
                    let _ = ctrl.send(Control::Message(pong)).await;
                });
            }
            ClientMessage::Cancel { request_id } => match self.active.get(&request_id) {
                Some(active) => active.cancel.cancel(),
                None => {
                    let err = ServerMessage::error(
                        ErrorCode::BadRequest,
                        format!("no request {request_id:?} in flight"),
                        Some(request_id),
                    );
                    let _ = self.ctrl.send(Control::Message(err)).await;
                }
            },
            ClientMessage::Synthesize {
                text,
                voice,
                request_id,
                trace_id,
                delivery,
            } => {
                self.synthesize(text, voice, request_id, trace_id, delivery)
                    .await
            }
        }
        None
    }

    async fn bad_message(&mut self, err: ServerMessage) -> Option<Closing> {
        self.bad_messages += 1;
        metrics::request_finished("rejected", ErrorCode::BadRequest.as_str());
        let _ = self.ctrl.send(Control::Message(err)).await;
        (self.bad_messages >= self.shared.config.max_bad_messages).then(|| {
            Closing::Drain(CloseFrame {
                code: CLOSE_POLICY,
                reason: "too many bad messages".into(),
            })
        })
    }

    async fn synthesize(
        &mut self,
        text: String,
        voice: Option<String>,
        request_id: Option<String>,
        trace_id: Option<String>,
        delivery: Delivery,
    ) {
        let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let trace_id = trace_id
            .or_else(|| self.trace_hint.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let limits = &self.shared.config;
        let chars = text.chars().count();
        let refusal = if self.shared.shutdown.is_cancelled() {
            Some((
                ErrorCode::WorkerUnavailable,
                "the server is shutting down".to_owned(),
            ))
        } else if text.trim().is_empty() {
            Some((ErrorCode::EmptyText, "text is empty".to_owned()))
        } else if chars > limits.max_text_chars {
            Some((
                ErrorCode::TextTooLong,
                format!(
                    "text is {chars} characters; the limit is {}",
                    limits.max_text_chars
                ),
            ))
        } else if self.active.contains_key(&request_id) {
            Some((
                ErrorCode::BadRequest,
                format!("request {request_id:?} is already in flight"),
            ))
        } else if self.active.len() >= limits.max_requests_per_connection {
            Some((
                ErrorCode::Overloaded,
                format!(
                    "{} requests in flight on this connection",
                    self.active.len()
                ),
            ))
        } else if self.shared.inflight.load(Ordering::Relaxed) >= limits.max_inflight {
            Some((
                ErrorCode::Overloaded,
                "the server is at capacity".to_owned(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            metrics::request_finished("rejected", code.as_str());
            info!(session_id = %self.session_id, %request_id, %trace_id, code = code.as_str(),
                %message, "request rejected");
            let err = ServerMessage::error(code, message, Some(request_id));
            let _ = self.ctrl.send(Control::Message(err)).await;
            return;
        }
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
        info!(session_id = %self.session_id, %request_id, %trace_id, stream_id, chars,
            "request accepted");
        let cancel = CancellationToken::new();
        self.active.insert(
            request_id.clone(),
            Active {
                cancel: cancel.clone(),
            },
        );
        self.update_inflight(1);
        let pending = Pending {
            request_id,
            trace_id,
            session_id: self.session_id.to_owned(),
            stream_id,
            text,
            voice,
            delivery,
            received: std::time::Instant::now(),
        };
        self.tasks.spawn(relay(
            Arc::clone(&self.shared.relay),
            pending,
            self.data.clone(),
            cancel,
        ));
    }

    fn update_inflight(&self, delta: isize) {
        let n = if delta > 0 {
            self.shared.inflight.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.shared.inflight.fetch_sub(1, Ordering::Relaxed) - 1
        };
        metrics::inflight(n);
    }

    /// Cancels what is still in flight and waits for the relays to stop.
    async fn finish(&mut self) {
        for active in self.active.values() {
            active.cancel.cancel();
        }
        while self.tasks.join_next().await.is_some() {
            self.update_inflight(-1);
        }
        self.active.clear();
    }
}

/// One `grpc.health.v1` round trip to the worker: its duration in µs and
/// the answer.
async fn deep_ping(channel: tonic::transport::Channel) -> (u64, String) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let started = Instant::now();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: tts_worker::HEALTH_SERVICE.into(),
    };
    let answer =
        tokio::time::timeout(std::time::Duration::from_secs(2), client.check(request)).await;
    let rtt = started.elapsed().as_micros() as u64;
    let status = match answer {
        Ok(Ok(resp)) => ServingStatus::try_from(resp.get_ref().status)
            .unwrap_or(ServingStatus::Unknown)
            .as_str_name()
            .to_owned(),
        Ok(Err(status)) => format!("error: {}", status.message()),
        Err(_) => "error: no answer within 2 s".to_owned(),
    };
    (rtt, status)
}

/// Owns the socket's send half. Stamps each frame with the orchestrator's
/// time as it is written, drops frames of cancelled requests, and fills
/// each `end` with the frames and samples actually sent.
async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut ctrl: mpsc::Receiver<Control>,
    mut data: mpsc::Receiver<Outgoing>,
    stats: Arc<RelayStats>,
) {
    let mut streams: HashMap<u32, SentSoFar> = HashMap::new();
    let mut wire = Vec::with_capacity(tts_frame::FrameHeader::LEN + tts_frame::PAYLOAD_BYTES);
    loop {
        let message = tokio::select! {
            biased;
            c = ctrl.recv() => match c {
                Some(Control::Message(m)) => Message::Text(m.to_json().into()),
                Some(Control::Close(frame)) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
            d = data.recv() => match d {
                Some(Outgoing::Frame { mut header, payload, samples, received, cancelled }) => {
                    stats.frame_dequeued();
                    if cancelled.is_cancelled() {
                        metrics::frames_dropped(1);
                        continue;
                    }
                    let now = Instant::now();
                    header.orchestrator_ts_us = tts_frame::now_us();
                    encode_frame(&header, &payload, &mut wire);
                    let stream = streams.entry(header.stream_id).or_default();
                    let gap = stream.last_sent.map(|last| now - last);
                    stream.last_sent = Some(now);
                    stream.frames += 1;
                    stream.samples += u64::from(samples);
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                    metrics::frame_sent(now - received, gap);
                    Message::Binary(bytes::Bytes::copy_from_slice(&wire))
                }
                Some(Outgoing::End { request_id, stream_id, cancelled }) => {
                    let sent = streams.remove(&stream_id).unwrap_or_default();
                    let end = ServerMessage::End {
                        request_id,
                        stream_id,
                        frames: sent.frames,
                        samples: sent.samples,
                        cancelled,
                    };
                    Message::Text(end.to_json().into())
                }
                Some(Outgoing::Failed { stream_id, error }) => {
                    // A failed request sends no `end`: forget its stream.
                    streams.remove(&stream_id);
                    Message::Text(error.to_json().into())
                }
                Some(Outgoing::Message(m)) => Message::Text(m.to_json().into()),
                Some(Outgoing::Close(frame)) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    // Frames still queued will never be sent: release them from the count.
    data.close();
    let mut dropped = 0;
    while let Ok(item) = data.try_recv() {
        if matches!(item, Outgoing::Frame { .. }) {
            stats.frame_dequeued();
            dropped += 1;
        }
    }
    if dropped > 0 {
        metrics::frames_dropped(dropped);
    }
}

/// What the writer has sent of one stream.
#[derive(Debug, Default)]
struct SentSoFar {
    frames: u64,
    samples: u64,
    last_sent: Option<Instant>,
}
