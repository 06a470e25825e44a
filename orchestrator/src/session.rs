//! One WebSocket connection: a reader loop that parses client messages and
//! starts relays, and a writer task ([`crate::writer`]) that owns the
//! socket's send half.
//!
//! Every way a connection ends is said to the client: an `error` for each
//! request still in flight, then a close code (1000 idle, 1001 shutdown,
//! 1007 invalid UTF-8, 1008 policy, 1009 message too big). Nothing the
//! client did not ask for is lost without a metric and a log line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use tts_frame::{FRAME_SAMPLES, SAMPLE_RATE};

use crate::accept::Ticket;
use crate::admission::{
    Ask, ConnectionBudget, OnConnection, Permit, Refusal, TextPermit, shortened,
};
use crate::app::App;
use crate::context::{Piece, context};
use crate::metrics;
use crate::protocol::{
    Command, Delivery, ErrorCode, Options, Outcome, PROTOCOL_VERSION, ServerMessage,
};
use crate::queue::{FrameQueue, frame_queue};
use crate::relay::relay;
use crate::request::{Api, Request, RequestIds};
use crate::stop::{Stop, StopReason};
use crate::writer::{Control, write_loop};

/// Close codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// How long a closing connection's writer may take to flush what is
/// queued before it is stopped.
pub(crate) const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Control messages (pongs, immediate errors) queued for one connection.
const CONTROL_QUEUE: usize = 64;

/// Serves one connection until the client leaves, misbehaves, idles or the
/// server drains. Holds the connection's `ticket` to the end.
pub(crate) async fn serve(
    socket: WebSocket,
    shared: Arc<App>,
    peer: IpAddr,
    trace_hint: Option<String>,
    ticket: Ticket,
) {
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    shared.stats.connection_opened();
    info!(%session_id, %peer, "connection opened");
    let (sink, stream) = socket.split();
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (data_tx, data_rx) =
        frame_queue(shared.config.client_queue_frames, Arc::clone(&shared.stats));
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
        encoding: "pcm_s16le".into(),
    };
    let mut closing = None;
    if ctrl_tx.send(Control::Message(ready)).await.is_ok() {
        let mut conn = Connection {
            shared: &shared,
            session_id: &session_id,
            peer,
            trace_hint,
            ctrl: ctrl_tx.clone(),
            data: data_tx.clone(),
            active: HashMap::new(),
            tasks: JoinSet::new(),
            next_stream_id: 1,
            bad_messages: 0,
            budget: ConnectionBudget::new(&shared.config),
            worker_calls: Arc::new(Semaphore::new(1)),
        };
        closing = conn.run(stream).await;
        let reason = match &closing {
            Some(c) => c.for_requests.clone(),
            None => StopReason::Disconnected,
        };
        conn.finish(reason).await;
    }
    drop(data_tx);
    let close = closing.map(|closing| {
        info!(%session_id, code = closing.frame.code, reason = %closing.frame.reason,
            "closing the connection");
        closing.frame
    });
    let flushed = tokio::time::timeout(CLOSE_FLUSH_LIMIT, async {
        match close {
            // The writer sends what the requests queued (their own last
            // messages), then the close; the control queue stays open
            // until it is done.
            Some(frame) => {
                let _ = ctrl_tx.send(Control::Close(frame)).await;
            }
            None => drop(ctrl_tx),
        }
        let _ = (&mut writer).await;
    })
    .await
    .is_ok();
    if !flushed {
        metrics::close_unflushed();
        warn!(%session_id, "the client did not take the connection's last messages; dropped");
        writer.abort();
    }
    drop(ticket);
    shared.stats.connection_closed();
    info!(%session_id, "connection closed");
}

/// How the server ends a connection: what requests in flight are told,
/// then the close frame.
struct Closing {
    for_requests: StopReason,
    frame: CloseFrame,
}

impl Closing {
    fn new(code: u16, reason: &str, for_requests: StopReason) -> Self {
        Self {
            for_requests,
            frame: CloseFrame {
                code,
                reason: reason.to_owned().into(),
            },
        }
    }
}

struct Connection<'a> {
    shared: &'a App,
    session_id: &'a str,
    peer: IpAddr,
    trace_hint: Option<String>,
    ctrl: mpsc::Sender<Control>,
    data: FrameQueue,
    active: HashMap<String, Active>,
    tasks: JoinSet<String>,
    next_stream_id: u32,
    bad_messages: u32,
    /// Requests and characters in flight on this connection.
    budget: ConnectionBudget,
    /// One deep ping or voices request at a time per connection.
    worker_calls: Arc<Semaphore>,
}

struct Active {
    stop: Stop,
    /// Characters of its text (a context's so far).
    chars: usize,
    /// Its characters' place in the connection's budget.
    text: Option<TextPermit>,
    /// A context's text input.
    feed: Option<mpsc::Sender<Piece>>,
}

/// Pieces a context may have waiting before appends are refused.
const CONTEXT_PIECES: usize = 1024;

/// A read error's close: oversize and invalid UTF-8 get their own codes.
fn read_error_closing(e: &axum::Error) -> Option<Closing> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    let inner = std::error::Error::source(e)?.downcast_ref::<WsError>()?;
    let message = |what: &str| StopReason::Failed(ErrorCode::BadRequest, what.to_owned());
    match inner {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(Closing::new(
            CLOSE_TOO_BIG,
            "message too big",
            message("the connection closed: a client message was larger than allowed"),
        )),
        WsError::Utf8(_) => Some(Closing::new(
            CLOSE_INVALID_DATA,
            "invalid UTF-8",
            message("the connection closed: a text message was not valid UTF-8"),
        )),
        _ => None,
    }
}

impl Connection<'_> {
    /// Reads until the client closes, misbehaves, idles or the server
    /// drains; returns how to close, if the server closes.
    async fn run(
        &mut self,
        mut stream: futures::stream::SplitStream<WebSocket>,
    ) -> Option<Closing> {
        let shutdown = self.shared.shutdown.clone();
        let force = self.shared.force.clone();
        let idle_limit = self.shared.config.idle_timeout();
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let idle_at = last_heard + idle_limit;
            tokio::select! {
                // Finished requests first, so that a client that sends its
                // next request on reading the last one's end is not counted
                // against the per-connection limit.
                biased;
                Some(done) = self.tasks.join_next() => self.reap(done),
                msg = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match msg {
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
                            let closing = read_error_closing(&e);
                            if let Some(c) = &closing {
                                metrics::connection_closed_by_server(c.frame.code);
                            }
                            debug!(session_id = %self.session_id, error = %e, "read failed");
                            return closing;
                        }
                    }
                }
                _ = tokio::time::sleep_until(idle_at), if self.active.is_empty() => {
                    metrics::connection_closed_by_server(CLOSE_NORMAL);
                    return Some(Closing::new(CLOSE_NORMAL, "idle timeout", StopReason::Cancelled));
                }
                _ = shutdown.cancelled(), if self.active.is_empty() => {
                    return Some(Closing::new(CLOSE_GOING_AWAY, "server shutting down",
                        StopReason::Cancelled));
                }
                _ = force.cancelled() => {
                    let reason = StopReason::Failed(ErrorCode::ShuttingDown,
                        "the server shut down before the request could finish".into());
                    return Some(Closing::new(CLOSE_GOING_AWAY, "server shut down", reason));
                }
            }
        }
    }

    fn reap(&mut self, done: Result<String, tokio::task::JoinError>) {
        if let Ok(request_id) = done {
            self.active.remove(&request_id);
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<Closing> {
        let message = match Command::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let err = ServerMessage::error(ErrorCode::BadRequest, e.to_string(), None);
                return self.bad_message(err).await;
            }
        };
        self.bad_messages = 0;
        match message {
            Command::Ping { id, deep: false } => {
                let pong = ServerMessage::Pong {
                    id,
                    server_time_us: tts_frame::now_us(),
                    worker_rtt_us: None,
                    worker_status: None,
                };
                self.control(pong).await;
            }
            Command::Ping { id, deep: true } => self.deep_ping(id).await,
            Command::Cancel { request_id } => match self.active.get(&request_id) {
                Some(active) => active.stop.stop(StopReason::Cancelled),
                None => {
                    let err = ServerMessage::error(
                        ErrorCode::BadRequest,
                        format!("no request {request_id:?} in flight"),
                        Some(request_id),
                    );
                    self.control(err).await;
                }
            },
            Command::Synthesize {
                text,
                voice,
                request_id,
                trace_id,
                delivery,
                options,
            } => {
                self.accept(Some(text), voice, request_id, trace_id, delivery, options)
                    .await
            }
            Command::Voices => self.voices().await,
            Command::ContextOpen {
                request_id,
                trace_id,
                voice,
                delivery,
                options,
            } => {
                self.accept(None, voice, request_id, trace_id, delivery, options)
                    .await
            }
            Command::Append { request_id, text } => self.feed(request_id, Piece::Text(text)).await,
            Command::Flush { request_id } => self.feed(request_id, Piece::Flush).await,
            Command::Close { request_id } => self.feed(request_id, Piece::Close).await,
        }
        None
    }

    /// Queues a control message; a client that reads nothing holds the
    /// reader here (the queue is bounded), which in turn stops it reading.
    async fn control(&self, message: ServerMessage) {
        let _ = self.ctrl.send(Control::Message(message)).await;
    }

    /// Lists the worker's voices (one `ListVoices` call, bounded in time).
    async fn voices(&self) {
        let relay = Arc::clone(&self.shared.relay);
        self.beside_reader(async move {
            match crate::voices::list(&relay.pool).await {
                Ok(list) => list.into_message(),
                Err(e) => ServerMessage::error(e.code(), e.to_string(), None),
            }
        })
        .await;
    }

    /// A deep ping: a gRPC health round trip to the worker, then `pong`.
    async fn deep_ping(&self, id: serde_json::Value) {
        let worker = self.shared.relay.pool.any();
        let faults = Arc::clone(&self.shared.relay.faults);
        self.beside_reader(async move {
            let (rtt, status) = match worker {
                Ok(worker) => deep_ping(worker.channel.clone(), &faults).await,
                Err(e) => (0, format!("error: {e}")),
            };
            ServerMessage::Pong {
                id,
                server_time_us: tts_frame::now_us(),
                worker_rtt_us: Some(rtt),
                worker_status: Some(status),
            }
        })
        .await;
    }

    /// Runs a call to the worker (a deep ping, a voices list) beside the
    /// reader and queues its answer; one at a time per connection, so a
    /// flood of them cannot pile up tasks (the others get `rate_limited`).
    async fn beside_reader(
        &self,
        call: impl std::future::Future<Output = ServerMessage> + Send + 'static,
    ) {
        let Ok(permit) = Arc::clone(&self.worker_calls).try_acquire_owned() else {
            metrics::request_finished(Outcome::ClientError, Some(ErrorCode::RateLimited));
            let err = ServerMessage::error(
                ErrorCode::RateLimited,
                "one deep ping or voices request at a time per connection",
                None,
            );
            self.control(err).await;
            return;
        };
        let ctrl = self.ctrl.clone();
        tokio::spawn(async move {
            let answer = call.await;
            // Bounded: a client that reads nothing loses the answer.
            if ctrl.try_send(Control::Message(answer)).is_err() {
                metrics::messages_dropped("control");
            }
            drop(permit);
        });
    }

    async fn bad_message(&mut self, err: ServerMessage) -> Option<Closing> {
        self.bad_messages += 1;
        metrics::request_finished(Outcome::ClientError, Some(ErrorCode::BadRequest));
        self.control(err).await;
        (self.bad_messages >= self.shared.config.max_bad_messages).then(|| {
            metrics::connection_closed_by_server(CLOSE_POLICY);
            Closing::new(CLOSE_POLICY, "too many bad messages", StopReason::Cancelled)
        })
    }

    /// Admits a request, or says why not. A context has no text yet
    /// (`None`).
    fn admit(
        &self,
        text: Option<&str>,
        voice: Option<&str>,
        request_id: &str,
        trace_id: &str,
    ) -> Result<(Permit, Option<TextPermit>), Refusal> {
        self.shared.admission.admit(Ask {
            text,
            voice,
            ids: &[("request_id", request_id), ("trace_id", trace_id)],
            peer: self.peer,
            connection: Some(OnConnection {
                budget: &self.budget,
                request_id,
                duplicate: self.active.contains_key(request_id),
            }),
        })
    }

    /// Accepts a request, or refuses it with a coded error: a `synthesize`
    /// with its whole `text`, or a context (`None`: text comes in pieces).
    async fn accept(
        &mut self,
        text: Option<String>,
        voice: Option<String>,
        request_id: Option<String>,
        trace_id: Option<String>,
        delivery: Delivery,
        options: Options,
    ) {
        let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let trace_id = trace_id
            .or_else(|| self.trace_hint.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let admitted = self.admit(text.as_deref(), voice.as_deref(), &request_id, &trace_id);
        let (permit, text_permit) = match admitted {
            Ok(admitted) => admitted,
            Err(Refusal {
                code,
                message,
                retry_after_ms,
            }) => {
                metrics::request_finished(code.outcome(), Some(code));
                // Oversized identifiers are not echoed back whole.
                let (request_id, trace_id) = (shortened(&request_id), shortened(&trace_id));
                info!(session_id = %self.session_id, %request_id, %trace_id, code = code.as_str(),
                detail = %message, "request refused");
                let err = ServerMessage::Error {
                    code,
                    message,
                    request_id: Some(request_id.to_owned()),
                    retry_after_ms,
                };
                self.control(err).await;
                return;
            }
        };
        let chars = text.as_deref().map_or(0, |t| t.chars().count());
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
        let is_context = text.is_none();
        info!(session_id = %self.session_id, %request_id, %trace_id, stream_id, chars,
            context = is_context, "request accepted");
        let ids = RequestIds {
            request_id: request_id.clone(),
            trace_id,
            session_id: self.session_id.to_owned(),
        };
        let req =
            Request::new(ids, stream_id, voice, delivery, options, Api::WebSocket).holding(permit);
        let (feed, pieces) = if is_context {
            let (tx, rx) = mpsc::channel(CONTEXT_PIECES);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.active.insert(
            request_id.clone(),
            Active {
                stop: req.stop.clone(),
                chars,
                text: text_permit,
                feed,
            },
        );
        let (ctx, out) = (Arc::clone(&self.shared.relay), self.data.clone());
        match pieces {
            Some(pieces) => {
                let idle = Duration::from_millis(self.shared.config.context_idle_ms);
                self.tasks.spawn(context(ctx, req, pieces, out, idle))
            }
            None => self
                .tasks
                .spawn(relay(ctx, req, text.unwrap_or_default(), out)),
        };
    }

    /// Hands a piece to its context; refusals are coded errors and leave
    /// the context as it was.
    async fn feed(&mut self, request_id: String, piece: Piece) {
        if let Err((code, message)) = self.try_feed(&request_id, piece) {
            metrics::request_finished(code.outcome(), Some(code));
            let err = ServerMessage::error(code, message, Some(shortened(&request_id).to_owned()));
            self.control(err).await;
        }
    }

    /// Hands a piece on, or says why not (in this order): no such
    /// context, not a context, the context's text too long, the
    /// connection's characters, too many pieces waiting, closed.
    fn try_feed(&mut self, request_id: &str, piece: Piece) -> Result<(), (ErrorCode, String)> {
        let max_chars = self.shared.config.max_text_chars;
        let added = match &piece {
            Piece::Text(t) => t.chars().count(),
            _ => 0,
        };
        let Some(active) = self.active.get_mut(request_id) else {
            let message = format!("no context {request_id:?} is open");
            return Err((ErrorCode::BadRequest, message));
        };
        let Some(feed) = &active.feed else {
            let message = format!("request {request_id:?} is not a context");
            return Err((ErrorCode::BadRequest, message));
        };
        if active.chars + added > max_chars {
            let message = format!("the context's text would be over {max_chars} characters");
            return Err((ErrorCode::TextTooLong, message));
        }
        let Some(more) = self.budget.take_chars(added) else {
            let inflight = self.budget.chars_in_flight();
            let message = format!("{inflight} characters in flight on this connection");
            return Err((ErrorCode::RateLimited, message));
        };
        match feed.try_send(piece) {
            Ok(()) => {
                active.chars += added;
                match &mut active.text {
                    Some(text) => text.merge(more),
                    None => active.text = Some(more),
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err((
                ErrorCode::RateLimited,
                "too many pieces waiting in this context".to_owned(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err((
                ErrorCode::BadRequest,
                format!("context {request_id:?} is closed"),
            )),
        }
    }

    /// Stops what is still in flight for `reason` and waits for the relays
    /// to end (each sends its last message, bounded in time).
    async fn finish(&mut self, reason: StopReason) {
        for active in self.active.values() {
            active.stop.stop(reason.clone());
        }
        while let Some(done) = self.tasks.join_next().await {
            self.reap(done);
        }
    }
}

/// One `grpc.health.v1` round trip to the worker: its duration in µs and
/// the answer. An injected link latency delays it by a round trip.
async fn deep_ping(
    channel: tonic::transport::Channel,
    faults: &tts_telemetry::faults::Faults,
) -> (u64, String) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let started = Instant::now();
    if let Some(one_way) = faults.link_delay() {
        tokio::time::sleep(one_way * 2).await;
    }
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: tts_proto::HEALTH_SERVICE.into(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), client.check(request)).await;
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
