//! A request as the orchestrator carries it from admission to its last
//! message: its ids, what it asks for, where it came from, its stop switch
//! and its `relay` span.

use std::time::Instant;

use tracing::Span;

use crate::admission::Permit;
use crate::protocol::{Delivery, Format, Options, Speed};
use crate::stop::Stop;

/// The ids every log line and trace of a request carries.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) session_id: String,
}

/// A request's ids and stream with its `relay` span, made where the ids
/// are first known: every line about the request, a refusal included, is
/// logged inside the span and carries the ids from it.
#[derive(Debug)]
pub(crate) struct Traced {
    pub(crate) ids: RequestIds,
    pub(crate) stream_id: u32,
    pub(crate) span: Span,
}

impl Traced {
    pub(crate) fn new(ids: RequestIds, stream_id: u32) -> Self {
        let span = relay_span(&ids, stream_id);
        Self {
            ids,
            stream_id,
            span,
        }
    }
}

/// The API a request came in on, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    WebSocket,
    Http,
}

impl Api {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Http => "http",
        }
    }
}

/// How a relay counts in the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counting {
    /// A request of its own: its outcome, first audio and bytes count.
    Request,
    /// A clause of a context: the context counts, not its clauses.
    ClauseOfContext,
}

/// A request accepted for relaying (a `synthesize`, a context, a clause of
/// a context, or an HTTP speech request).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) ids: RequestIds,
    pub(crate) stream_id: u32,
    /// Voice name; `None` for the worker's default.
    pub(crate) voice: Option<String>,
    pub(crate) delivery: Delivery,
    /// Speed, noise, encoding and rate.
    pub(crate) options: Options,
    pub(crate) api: Api,
    pub(crate) counting: Counting,
    /// When it was accepted.
    pub(crate) received: Instant,
    /// Stops it from outside (a cancel, a disconnect, a shutdown).
    pub(crate) stop: Stop,
    /// `relay`, with the request's ids and stream.
    pub(crate) span: Span,
    /// Its place among the requests in flight, until it ends.
    permit: Option<Permit>,
}

impl Request {
    /// A request accepted now, with a stop switch, in its span.
    pub(crate) fn new(
        traced: Traced,
        voice: Option<String>,
        delivery: Delivery,
        options: Options,
        api: Api,
    ) -> Self {
        let Traced {
            ids,
            stream_id,
            span,
        } = traced;
        Self {
            ids,
            stream_id,
            voice,
            delivery,
            options,
            api,
            counting: Counting::Request,
            received: Instant::now(),
            stop: Stop::default(),
            span,
            permit: None,
        }
    }

    /// It holds `permit` until it ends.
    pub(crate) fn holding(mut self, permit: Permit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// One clause of this context, accepted now: the same ids, stream,
    /// voice and options, in the pipeline's own format (the context
    /// converts the joined audio itself); not counted on its own. Its
    /// span is its own, inside the context's where the context starts it.
    pub(crate) fn clause(&self) -> Self {
        Self {
            options: Options {
                format: Format::PIPELINE,
                ..self.options
            },
            counting: Counting::ClauseOfContext,
            ..Self::new(
                Traced::new(self.ids.clone(), self.stream_id),
                self.voice.clone(),
                self.delivery,
                self.options,
                self.api,
            )
        }
    }

    /// Whether it counts in the request metrics on its own.
    pub(crate) fn counted(&self) -> bool {
        self.counting == Counting::Request
    }

    /// What identifies its audio in the phrase cache, when it may be
    /// cached: a request of its own (not a clause) without timestamps
    /// (entries hold audio only).
    pub(crate) fn cache_key<'a>(&'a self, text: &'a str) -> Option<CacheKey<'a>> {
        if !self.counted() || self.options.timestamps {
            return None;
        }
        Some(CacheKey {
            voice: self.voice.as_deref().unwrap_or(""),
            speed: self.options.speed(),
            noise_scale: self.options.noise_scale,
            noise_w: self.options.noise_w,
            text,
        })
    }
}

/// The `relay` span of a request (linked to its trace for OTLP).
fn relay_span(ids: &RequestIds, stream_id: u32) -> Span {
    let span = tracing::info_span!("relay", request_id = %ids.request_id,
        trace_id = %ids.trace_id, session_id = %ids.session_id, stream_id);
    tts_telemetry::otel::link_trace(&span, &ids.trace_id);
    span
}

/// What makes two requests' audio the same: the voice asked for (empty
/// for the default), the options that change the audio and the text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheKey<'a> {
    pub(crate) voice: &'a str,
    pub(crate) speed: Speed,
    pub(crate) noise_scale: Option<f32>,
    pub(crate) noise_w: Option<f32>,
    pub(crate) text: &'a str,
}
