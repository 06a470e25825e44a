//! One WebSocket connection: a reader loop that parses client messages and
//! starts relays, and a writer task ([`crate::writer`]) that owns the
//! socket's send half.
//!
//! Every way a connection ends is said to the client: an `error` for each
//! request still in flight, then a close code (1000 idle, 1001 shutdown,
//! 1007 invalid UTF-8, 1008 policy, 1009 message too big). Nothing the
//! client did not ask for is lost without a metric and a log line.

mod dispatch;
mod feed;
mod start;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};
use tts_frame::{FRAME_SAMPLES, SAMPLE_RATE};

use crate::admission::{ConnectionBudget, TextPermit};
use crate::app::App;
use crate::context::Piece;
use crate::metrics;
use crate::protocol::{ErrorCode, PROTOCOL_VERSION, ServerMessage};
use crate::queue::{FrameQueue, frame_queue};
use crate::relay::Ended;
use crate::stop::{Stop, StopReason};
use crate::writer::{Control, write_loop};
use tts_telemetry::listener::Ticket;

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
    let writer = tokio::spawn(write_loop(
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
            // An address that keeps reconnecting to retry at once waits
            // on its new connection too.
            hold_until: shared.admission.backoff.storming(peer),
        };
        closing = conn.run(stream).await;
        let reason = match &closing {
            Some(c) => c.for_requests.clone(),
            None => StopReason::Disconnected,
        };
        conn.finish(reason).await;
    }
    drop(data_tx);
    close(&session_id, closing, ctrl_tx, writer).await;
    drop(ticket);
    shared.stats.connection_closed();
    info!(%session_id, "connection closed");
}

/// Lets the writer send what the requests queued (their own last
/// messages) and then the close frame, if the server closes, within
/// [`CLOSE_FLUSH_LIMIT`]; the control queue stays open until it is done.
async fn close(
    session_id: &str,
    closing: Option<Closing>,
    ctrl: mpsc::Sender<Control>,
    mut writer: JoinHandle<()>,
) {
    let close = closing.map(|closing| {
        info!(%session_id, code = closing.frame.code, reason = %closing.frame.reason,
            "closing the connection");
        closing.frame
    });
    let flushed = tokio::time::timeout(CLOSE_FLUSH_LIMIT, async {
        match close {
            Some(frame) => {
                let _ = ctrl.send(Control::Close(frame)).await;
            }
            None => drop(ctrl),
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
    tasks: JoinSet<Ended>,
    next_stream_id: u32,
    bad_messages: u32,
    /// Requests and characters in flight on this connection.
    budget: ConnectionBudget,
    /// One deep ping or voices request at a time per connection.
    worker_calls: Arc<Semaphore>,
    /// A request of this connection was refused with a time to retry:
    /// while nothing else is in flight, its next message is not read
    /// before then ([`Connection::hold`]).
    hold_until: Option<tokio::time::Instant>,
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
            let held = self.held();
            tokio::select! {
                // Finished requests first, so that a client that sends its
                // next request on reading the last one's end is not counted
                // against the per-connection limit.
                biased;
                Some(done) = self.tasks.join_next() => self.reap(done),
                _ = tokio::time::sleep_until(held.unwrap_or(idle_at)), if held.is_some() => {
                    // Whatever waited unread counts as heard now.
                    self.hold_until = None;
                    last_heard = tokio::time::Instant::now();
                }
                msg = stream.next(), if held.is_none() => {
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
                _ = tokio::time::sleep_until(idle_at), if self.active.is_empty() && held.is_none() => {
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

    fn reap(&mut self, done: Result<Ended, tokio::task::JoinError>) {
        if let Ok(ended) = done {
            self.active.remove(&ended.request_id);
            if let Some(wait) = ended.retry_after {
                self.hold(wait);
            }
        }
    }

    /// A request was refused with `retry_after`: the connection's next
    /// message waits until then, spaced from the address's other held
    /// requests (at most [`MAX_HOLD`](crate::backoff::MAX_HOLD)), unless
    /// another of its requests is in flight (its cancels and appends must
    /// not wait). An address refused more than a few times a second has
    /// its new connections held too. See [`crate::backoff`]. (A retry read
    /// before its refused relay's task is reaped, within microseconds of
    /// the refusal, is not held: the reader reaps ended tasks first.)
    pub(super) fn hold(&mut self, retry_after: Duration) {
        let until = self
            .shared
            .admission
            .backoff
            .refused(self.peer, retry_after);
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.max(until)));
    }

    /// Until when the next message waits, if it does.
    fn held(&self) -> Option<tokio::time::Instant> {
        let until = self.hold_until?;
        (self.active.is_empty() && until > tokio::time::Instant::now()).then_some(until)
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
