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

mod body;
mod compress;
mod ogg;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::info;

use crate::admission::{Ask, Permit, Refusal};
use crate::app::App;
use crate::frame::{Failure, Item};
use crate::metrics;
use crate::protocol::ErrorCode;
use crate::protocol::http::{OpenAiError, OpenAiErrorBody, SpeechError, SpeechRequest};
use crate::queue::{FrameReceiver, frame_queue};
use crate::relay::relay;
use crate::request::{Api, Request, RequestIds, Traced};
use crate::stop::{Stop, StopReason};
use body::{BodyWriter, streaming_response};

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
    let body = OpenAiError {
        error: OpenAiErrorBody {
            message: message.to_owned(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.to_owned(),
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(ms) = retry_after_ms
        && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
        // OpenAI's own header for the wait to the millisecond, which its
        // client libraries read before `Retry-After`.
        response
            .headers_mut()
            .insert("retry-after-ms", HeaderValue::from(ms));
        response
            .extensions_mut()
            .insert(RetryAfter(Duration::from_millis(ms)));
    }
    response
}

/// A refusal's wait to the millisecond (the `Retry-After` header has
/// whole seconds), for the address's back-off.
#[derive(Debug, Clone, Copy)]
struct RetryAfter(Duration);

/// The request field a refusal is about (OpenAI's `param`), for the codes
/// that name one.
fn field_of(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::EmptyText | ErrorCode::TextTooLong => Some("input"),
        ErrorCode::UnknownVoice => Some("voice"),
        _ => None,
    }
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
    body: Body,
) -> Response {
    if let Err((status, reason, message)) =
        crate::security::check_handshake(&shared.config, &headers, query.as_deref())
    {
        metrics::connection_refused(reason);
        return error_response(status, reason, message, None, None);
    }
    let body = match read_body(&shared.config, &headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let received = Instant::now();
    // An address that keeps asking again at once is answered at the pace
    // it was asked to keep (crate::backoff); a shutdown ends the wait, and
    // admission then refuses.
    if let Some(until) = shared.admission.backoff.storming(peer.ip()) {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    let traced = Traced::new(new_ids(&headers), 1);
    let span = traced.span.clone();
    let (mut req, speech) = match span.in_scope(|| accept(&shared, &body, traced, peer)) {
        Ok(accepted) => accepted,
        Err(refused) => return paced(&shared, peer, *refused),
    };
    req.received = received;
    let guard = DisconnectGuard(req.stop.clone());
    let format = req.options.format;
    let body = match BodyWriter::new(speech.container, format, Arc::clone(&shared.stats)) {
        Ok(body) => body,
        Err(e) => return coded(ErrorCode::Internal, &e.to_string(), None, None),
    };
    let rx = spawn_relay(&shared, req, speech.input);
    // The response's status waits for the first frame (or the failure).
    paced(&shared, peer, first_frame(rx, body, guard).await)
}

/// A refusal that said when to retry makes its address wait that long.
fn paced(shared: &App, peer: SocketAddr, response: Response) -> Response {
    if let Some(RetryAfter(wait)) = response.extensions().get::<RetryAfter>() {
        shared.admission.backoff.refused(peer.ip(), *wait);
    }
    response
}

/// Parses and admits a request, logged inside its span either way: the
/// request and what it asks for, or the error response.
fn accept(
    shared: &App,
    body: &[u8],
    traced: Traced,
    peer: SocketAddr,
) -> Result<(Request, SpeechRequest), Box<Response>> {
    let mut speech = match SpeechRequest::try_from(body) {
        Ok(s) => s,
        Err(SpeechError { message, param }) => {
            metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
            info!(field = param, detail = %message, "http request refused");
            let refused = coded(ErrorCode::BadRequest, &message, Some(param), None);
            return Err(Box::new(refused));
        }
    };
    let permit = admit(shared, &speech, peer).map_err(|refusal| {
        let (code, message, retry) = (refusal.code, &refusal.message, refusal.retry_after_ms);
        Box::new(coded(code, message, field_of(code), retry))
    })?;
    let (voice, options) = (speech.voice.take(), speech.options);
    let req = Request::new(traced, voice, speech.delivery, options, Api::Http);
    Ok((req.holding(permit), speech))
}

/// Why a request body was not read: answered in OpenAI's shape like any
/// other refusal, and the connection closed (the rest of the body is not
/// read).
#[derive(Debug)]
enum BodyRefused {
    /// `Content-Length` or the bytes read so far over `--max-message-bytes`.
    TooLarge { limit: usize },
    /// Not all of it within `--body-timeout-secs`.
    TooSlow { secs: f64 },
    /// The client broke off or sent a malformed body.
    Unreadable(String),
}

impl IntoResponse for BodyRefused {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the limit of {limit} bytes"),
            ),
            Self::TooSlow { secs } => (
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {secs} s"),
            ),
            Self::Unreadable(e) => (
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            ),
        };
        let reason = match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::TooSlow { .. } => "body_timeout",
            Self::Unreadable(_) => "body_unreadable",
        };
        metrics::request_finished(ErrorCode::BadRequest.outcome(), Some(ErrorCode::BadRequest));
        metrics::connection_refused(reason);
        info!(%status, reason, detail = %message, "http request refused");
        let mut response = error_response(
            status,
            ErrorCode::BadRequest.as_str(),
            &message,
            Some("input"),
            None,
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Reads a request body of at most `--max-message-bytes` within
/// `--body-timeout-secs`: a declared `Content-Length` over the limit is
/// refused before a byte of the body is read.
async fn read_body(
    config: &crate::config::OrchestratorConfig,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, BodyRefused> {
    let limit = config.max_message_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRefused::TooLarge { limit });
    }
    let secs = config.body_timeout_secs;
    match tokio::time::timeout(
        std::time::Duration::from_secs_f64(secs),
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(BodyRefused::TooLarge { limit }),
        Ok(Err(e)) => Err(BodyRefused::Unreadable(e.to_string())),
        Err(_) => Err(BodyRefused::TooSlow { secs }),
    }
}

/// Whether reading stopped at the body limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A new request's ids: its own, a session of its own in the logs, and
/// the trace id of its `traceparent`, if it has one.
fn new_ids(headers: &HeaderMap) -> RequestIds {
    let request_id = uuid::Uuid::new_v4().to_string();
    let session_id = format!("http-{}", &request_id[..8]);
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tts_proto::trace_id_from_traceparent)
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    RequestIds {
        request_id,
        trace_id,
        session_id,
    }
}

/// Admission (no ids to check, no connection), logged either way.
fn admit(shared: &App, speech: &SpeechRequest, peer: SocketAddr) -> Result<Permit, Refusal> {
    let admitted = shared.admission.admit(Ask {
        text: Some(&speech.input),
        voice: speech.voice.as_deref(),
        ids: &[],
        peer: peer.ip(),
        connection: None,
    });
    match admitted {
        Ok((permit, _)) => {
            info!(
                chars = speech.input.chars().count(),
                "http request accepted"
            );
            Ok(permit)
        }
        Err(refusal) => {
            let (code, message) = (refusal.code, &refusal.message);
            metrics::request_finished(code.outcome(), Some(code));
            info!(code = code.as_str(), detail = %message, "http request refused");
            Err(refusal)
        }
    }
}

/// Relays the request in a task of its own (ended with `shutting_down`
/// when the grace period is over); its items come out of the receiver.
fn spawn_relay(shared: &Arc<App>, req: Request, text: String) -> FrameReceiver {
    let (tx, rx) = frame_queue(shared.config.client_queue_frames, Arc::clone(&shared.stats));
    let (shared, stop) = (Arc::clone(shared), req.stop.clone());
    tokio::spawn(async move {
        let relayed = relay(Arc::clone(&shared.relay), req, text, tx);
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
    rx
}

/// Waits for the first frame: then the response streams; a failure before
/// it is an error response.
async fn first_frame(
    mut rx: FrameReceiver,
    mut body: BodyWriter,
    guard: DisconnectGuard,
) -> Response {
    loop {
        match rx.recv().await {
            Some(Item::Start { .. } | Item::Words { .. } | Item::Refused { .. }) => continue,
            Some(Item::Failed { failure, .. }) => {
                let Failure {
                    code,
                    message,
                    retry_after_ms,
                } = failure;
                return coded(code, &message, field_of(code), retry_after_ms);
            }
            Some(Item::Frame(first)) => {
                return match body.push(first) {
                    Ok(head) => streaming_response(head, rx, body, guard),
                    Err(e) => coded(ErrorCode::Internal, &e.to_string(), None, None),
                };
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

/// `GET /v1/voices`.
pub(crate) async fn voices(State(shared): State<Arc<App>>) -> Response {
    match crate::voices::list(&shared.relay.pool).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => coded(e.code(), &e.to_string(), None, None),
    }
}

/// `GET /v1/models`: the model names a speech request may carry.
pub(crate) async fn models() -> Response {
    axum::Json(crate::protocol::http::ModelList::served()).into_response()
}

/// Any other path: 404, in OpenAI's shape like every other refusal.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    let message = format!("no such endpoint: {}", uri.path());
    error_response(StatusCode::NOT_FOUND, "not_found", &message, None, None)
}

/// A known path asked with a method it does not answer: 405.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let message = format!("{} does not answer {method}", uri.path());
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &message,
        None,
        None,
    )
}

/// `GET /`: the browser page (plain HTML and JS from `orchestrator/web/`,
/// built into the binary).
pub(crate) async fn page() -> Response {
    static_file(
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    )
}

/// `GET /player-worklet.js`: the page's AudioWorklet.
pub(crate) async fn worklet() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../web/player-worklet.js"),
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
