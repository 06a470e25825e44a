//! Starting a request on a connection: admission (in the fixed order,
//! with the connection's own budget), the refusal when there is one, and
//! the relay or context that runs beside the reader.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::info;

use super::{Active, CONTEXT_PIECES, Connection};
use crate::admission::{Ask, OnConnection, Permit, Refusal, TextPermit, shortened};
use crate::context::context;
use crate::metrics;
use crate::protocol::{RequestSpec, ServerMessage};
use crate::relay::relay;
use crate::request::{Api, Request, RequestIds, Traced};

impl Connection<'_> {
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
    pub(super) async fn accept(&mut self, text: Option<String>, spec: RequestSpec) {
        let request_id = spec
            .request_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let trace_id = spec
            .trace_id
            .or_else(|| self.trace_hint.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let voice = spec.voice.as_deref();
        let (permit, text_permit) = match self.admit(text.as_deref(), voice, &request_id, &trace_id)
        {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if let Some(ms) = refusal.retry_after_ms {
                    self.hold(Duration::from_millis(ms));
                }
                return self.refuse(refusal, &request_id, &trace_id).await;
            }
        };
        let chars = text.as_deref().map_or(0, |t| t.chars().count());
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
        let ids = RequestIds {
            request_id,
            trace_id,
            session_id: self.session_id.to_owned(),
        };
        let traced = Traced::new(ids, stream_id);
        let (voice, delivery, options) = (spec.voice, spec.delivery, spec.options);
        let req = Request::new(traced, voice, delivery, options, Api::WebSocket).holding(permit);
        req.span.in_scope(|| {
            info!(
                stream_id,
                chars,
                context = text.is_none(),
                "request accepted"
            );
        });
        self.start(req, text, chars, text_permit);
    }

    /// Says why a request was refused (its ids shortened when oversized).
    async fn refuse(&self, refusal: Refusal, request_id: &str, trace_id: &str) {
        let Refusal {
            code,
            message,
            retry_after_ms,
        } = refusal;
        metrics::request_finished(code.outcome(), Some(code));
        // Oversized identifiers are not echoed back whole.
        let (request_id, trace_id) = (shortened(request_id), shortened(trace_id));
        info!(session_id = %self.session_id, %request_id, %trace_id, code = code.as_str(),
            detail = %message, "request refused");
        let err = ServerMessage::Error {
            code,
            message,
            request_id: Some(request_id.to_owned()),
            retry_after_ms,
        };
        self.control(err).await;
    }

    /// Starts an admitted request's relay (or context) beside the reader.
    fn start(
        &mut self,
        req: Request,
        text: Option<String>,
        chars: usize,
        text_permit: Option<TextPermit>,
    ) {
        let (feed, pieces) = match text {
            None => {
                let (tx, rx) = mpsc::channel(CONTEXT_PIECES);
                (Some(tx), Some(rx))
            }
            Some(_) => (None, None),
        };
        self.active.insert(
            req.ids.request_id.clone(),
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
}
