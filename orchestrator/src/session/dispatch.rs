//! What a connection does with each client message: pings and deep
//! pings, cancels, voices, and the requests and context pieces handed on
//! (see `start` and `feed`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CLOSE_POLICY, Closing, Connection};
use crate::context::Piece;
use crate::metrics;
use crate::protocol::{Command, ErrorCode, Outcome, RequestSpec, ServerMessage};
use crate::stop::StopReason;
use crate::writer::Control;

impl Connection<'_> {
    /// Acts on one text message; returns how to close, if it was one bad
    /// message too many.
    pub(super) async fn on_text(&mut self, text: &str) -> Option<Closing> {
        let message = match Command::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let request_id = named_request(text);
                let err = ServerMessage::error(ErrorCode::BadRequest, e.to_string(), request_id);
                return self.bad_message(err).await;
            }
        };
        self.bad_messages = 0;
        match message {
            Command::Ping { id, deep: false } => self.pong(id).await,
            Command::Ping { id, deep: true } => self.deep_ping(id).await,
            Command::Cancel { request_id } => self.cancel(request_id).await,
            Command::Synthesize {
                text,
                voice,
                request_id,
                trace_id,
                delivery,
                options,
            } => {
                let spec = RequestSpec {
                    request_id,
                    trace_id,
                    voice,
                    delivery,
                    options,
                };
                self.accept(Some(text), spec).await
            }
            Command::Voices => self.voices().await,
            Command::ContextOpen {
                request_id,
                trace_id,
                voice,
                delivery,
                options,
            } => {
                let spec = RequestSpec {
                    request_id,
                    trace_id,
                    voice,
                    delivery,
                    options,
                };
                self.accept(None, spec).await
            }
            Command::Append { request_id, text } => self.feed(request_id, Piece::Text(text)).await,
            Command::Flush { request_id } => self.feed(request_id, Piece::Flush).await,
            Command::Close { request_id } => self.feed(request_id, Piece::Close).await,
        }
        None
    }

    /// A plain ping's `pong`, at once.
    async fn pong(&self, id: serde_json::Value) {
        let pong = ServerMessage::Pong {
            id,
            server_time_us: tts_frame::now_us(),
            worker_rtt_us: None,
            worker_status: None,
        };
        self.control(pong).await;
    }

    /// Stops a request of this connection; an unknown id is a coded error
    /// (echoing the id as sent).
    async fn cancel(&self, request_id: String) {
        match self.active.get(&request_id) {
            Some(active) => active.stop.stop(StopReason::Cancelled),
            None => {
                let err = ServerMessage::error(
                    ErrorCode::BadRequest,
                    format!("no request {request_id:?} in flight"),
                    Some(request_id),
                );
                self.control(err).await;
            }
        }
    }

    /// Queues a control message; a client that reads nothing holds the
    /// reader here (the queue is bounded), which in turn stops it reading.
    pub(super) async fn control(&self, message: ServerMessage) {
        let _ = self.ctrl.send(Control::Message(message)).await;
    }

    /// Lists the worker's voices (one `ListVoices` call, bounded in time).
    async fn voices(&self) {
        let relay = Arc::clone(&self.shared.relay);
        self.beside_reader(async move {
            match crate::voices::list(&relay.pool).await {
                Ok(list) => crate::voices::message(list),
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

    /// Answers a bad message; too many in a row close the connection.
    pub(super) async fn bad_message(&mut self, err: ServerMessage) -> Option<Closing> {
        self.bad_messages += 1;
        metrics::request_finished(Outcome::ClientError, Some(ErrorCode::BadRequest));
        self.control(err).await;
        (self.bad_messages >= self.shared.config.max_bad_messages).then(|| {
            metrics::connection_closed_by_server(CLOSE_POLICY);
            Closing::new(CLOSE_POLICY, "too many bad messages", StopReason::Cancelled)
        })
    }
}

/// The request a message that failed its checks names, if it names one
/// as a string (shortened as admission shortens ids): its `error` carries
/// it, so a client with several requests open knows which one failed.
fn named_request(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let id = value.get("request_id")?.as_str()?;
    Some(crate::admission::shortened(id).to_owned())
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

#[cfg(test)]
mod tests {
    use super::named_request;

    #[test]
    fn a_refused_message_names_the_request_it_was_for() {
        let bad_speed = r#"{"type":"synthesize","request_id":"r9","text":"Hi.","speed":9}"#;
        assert_eq!(named_request(bad_speed).as_deref(), Some("r9"));
        let bad_type = r#"{"type":"context_open","request_id":"c1","timestamps":"yes"}"#;
        assert_eq!(named_request(bad_type).as_deref(), Some("c1"));
        assert_eq!(
            named_request(r#"{"type":"synthesize","text":"Hi.","speed":9}"#),
            None
        );
        assert_eq!(named_request(r#"{"request_id":7}"#), None);
        assert_eq!(named_request("not json"), None);
        let long = format!(r#"{{"request_id":"{}"}}"#, "x".repeat(500));
        assert!(named_request(&long).is_some_and(|id| id.len() < 500));
    }
}
