//! Admission: whether a request may start, checked in one fixed order, and
//! the permits an admitted request holds until it ends.
//!
//! Bounds are semaphores, so a check and its count are one step (no
//! request slips between reading a counter and raising it): requests in
//! flight in the process (`--max-inflight`, requests), requests in flight
//! on one connection (`--max-requests-per-connection`, requests) and text
//! in flight on one connection (`--max-connection-chars`, characters).
//! Each permit goes back when it is dropped.
//!
//! The order, and the first refusal wins: shutdown; identifier and voice
//! sizes; empty text; text too long; an id already in flight on the
//! connection; requests on the connection; characters on the connection;
//! the client address's request rate (the only check that spends
//! something, a token of the address's bucket); requests in the process.
//! The HTTP endpoint has no ids or connection: it runs the others.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;
use governor::clock::{Clock, DefaultClock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::OrchestratorConfig;
use crate::metrics;
use crate::protocol::ErrorCode;

/// Longest `request_id` or `trace_id`, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 128;
/// Longest `voice` name, in bytes.
const MAX_VOICE_BYTES: usize = 64;

/// Why a request was not admitted: its code, message and, for the address
/// rate, when to retry (ms).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) retry_after_ms: Option<u64>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// The process's admission: shared by every connection and HTTP request.
pub(crate) struct Admission {
    shutdown: CancellationToken,
    max_text_chars: usize,
    requests_per_second: u32,
    /// Requests per second per client address, bursts of twice as many;
    /// an address whose bucket has filled again is forgotten at the next
    /// [`prune`](Self::prune).
    rate: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Requests in flight in the process (`--max-inflight`).
    inflight: Counted,
    /// Addresses told to wait by a refusal, and until when.
    pub(crate) backoff: Arc<Backoff>,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// Its text; `None` for a context (its text comes in pieces).
    pub(crate) text: Option<&'a str>,
    pub(crate) voice: Option<&'a str>,
    /// Named identifier fields, checked for size.
    pub(crate) ids: &'a [(&'static str, &'a str)],
    pub(crate) peer: IpAddr,
    /// Where it was sent, for a WebSocket request.
    pub(crate) connection: Option<OnConnection<'a>>,
}

/// A WebSocket request's connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OnConnection<'a> {
    pub(crate) budget: &'a ConnectionBudget,
    pub(crate) request_id: &'a str,
    /// Whether a request with the same id is in flight there.
    pub(crate) duplicate: bool,
}

/// What an admitted request holds until it ends: its place among the
/// process's requests in flight and, on a WebSocket, among its
/// connection's.
#[derive(Debug)]
pub(crate) struct Permit {
    _inflight: InflightPermit,
    _request: Option<OwnedSemaphorePermit>,
}

/// Characters of text in flight on a connection, held by a request (or a
/// context, growing with each piece) until it ends.
#[derive(Debug)]
pub(crate) struct TextPermit(OwnedSemaphorePermit);

impl TextPermit {
    /// Adds a piece's characters.
    pub(crate) fn merge(&mut self, more: TextPermit) {
        self.0.merge(more.0);
    }
}

impl Admission {
    pub(crate) fn new(config: &OrchestratorConfig, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            max_text_chars: config.max_text_chars,
            requests_per_second: config.requests_per_second_per_address,
            rate: Arc::new(rate_limiter(config.requests_per_second_per_address)),
            inflight: Counted::new(config.max_inflight),
            backoff: Arc::default(),
        }
    }

    /// Admits a request, or says why not (the first refusal in order).
    /// The text permit is for a WebSocket request's characters.
    pub(crate) fn admit(&self, ask: Ask<'_>) -> Result<(Permit, Option<TextPermit>), Refusal> {
        self.check_request(ask.text, ask.voice, ask.ids)?;
        let (request, text) = match ask.connection {
            Some(c) => {
                let chars = ask.text.map_or(0, |t| t.chars().count());
                let (request, text) = c.admit(chars)?;
                (Some(request), Some(text))
            }
            None => (None, None),
        };
        self.check_rate(ask.peer)?;
        let Some(inflight) = self.inflight.try_acquire() else {
            return Err(Refusal::new(
                ErrorCode::Overloaded,
                "the server is at capacity",
            ));
        };
        let permit = Permit {
            _inflight: inflight,
            _request: request,
        };
        Ok((permit, text))
    }

    /// Refusals that concern the request alone: shutdown, oversized
    /// fields, empty or long text.
    fn check_request(
        &self,
        text: Option<&str>,
        voice: Option<&str>,
        ids: &[(&'static str, &str)],
    ) -> Result<(), Refusal> {
        if self.shutdown.is_cancelled() {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        let voice = [("voice", voice.unwrap_or(""), MAX_VOICE_BYTES)];
        let ids = ids
            .iter()
            .map(|&(field, value)| (field, value, MAX_ID_BYTES));
        for (field, value, max) in ids.chain(voice) {
            if value.len() > max {
                let msg = format!("{field} is {} bytes; the limit is {max}", value.len());
                return Err(Refusal::new(ErrorCode::BadRequest, msg));
            }
        }
        let Some(text) = text else {
            return Ok(());
        };
        if text.trim().is_empty() {
            return Err(Refusal::new(ErrorCode::EmptyText, "text is empty"));
        }
        let chars = text.chars().count();
        if chars > self.max_text_chars {
            let msg = format!(
                "text is {chars} characters; the limit is {}",
                self.max_text_chars
            );
            return Err(Refusal::new(ErrorCode::TextTooLong, msg));
        }
        Ok(())
    }

    /// The client address's request rate (spends one of its tokens).
    /// Forgets every address whose bucket is full again (it would be
    /// admitted as if new), so that many addresses, or one IPv6 client
    /// rotating through its prefix, hold no memory once they pause; and
    /// every address the back-off no longer needs; every `PRUNE_PERIOD`
    /// until `done`.
    pub(crate) fn pruning(&self, done: CancellationToken) -> impl Future<Output = ()> + use<> {
        let rate = Arc::clone(&self.rate);
        let backoff = Arc::clone(&self.backoff);
        async move {
            let mut every = tokio::time::interval(PRUNE_PERIOD);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = done.cancelled() => return,
                    _ = every.tick() => {
                        let left = prune(&rate);
                        tracing::debug!(addresses = left, "rate limiter forgot the addresses that paused");
                        let waiting = backoff.prune();
                        tracing::debug!(addresses = waiting, "back-off forgot the addresses that neither wait nor storm");
                    }
                }
            }
        }
    }

    fn check_rate(&self, peer: IpAddr) -> Result<(), Refusal> {
        let Err(not_until) = self.rate.check_key(&peer) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Err(Refusal {
            code: ErrorCode::RateLimited,
            message: format!(
                "more than {} requests per second from this address",
                self.requests_per_second
            ),
            retry_after_ms: Some(wait.as_millis() as u64),
        })
    }
}

/// One connection's bounds: its requests and its characters in flight.
#[derive(Debug)]
pub(crate) struct ConnectionBudget {
    requests: Arc<Semaphore>,
    max_requests: usize,
    chars: Arc<Semaphore>,
    max_chars: usize,
}

impl ConnectionBudget {
    pub(crate) fn new(config: &OrchestratorConfig) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(config.max_requests_per_connection)),
            max_requests: config.max_requests_per_connection,
            chars: Arc::new(Semaphore::new(config.max_connection_chars)),
            max_chars: config.max_connection_chars,
        }
    }

    /// Characters of text in flight on the connection now.
    pub(crate) fn chars_in_flight(&self) -> usize {
        self.max_chars - self.chars.available_permits()
    }

    /// `chars` more characters on the connection, if they fit.
    pub(crate) fn take_chars(&self, chars: usize) -> Option<TextPermit> {
        let n = u32::try_from(chars).ok()?;
        let permit = Arc::clone(&self.chars).try_acquire_many_owned(n).ok()?;
        Some(TextPermit(permit))
    }
}

impl OnConnection<'_> {
    /// The connection's own refusals: a duplicate id, too many requests,
    /// too many characters.
    fn admit(&self, chars: usize) -> Result<(OwnedSemaphorePermit, TextPermit), Refusal> {
        let budget = self.budget;
        if self.duplicate {
            let msg = format!("request {:?} is already in flight", self.request_id);
            return Err(Refusal::new(ErrorCode::BadRequest, msg));
        }
        let Ok(request) = Arc::clone(&budget.requests).try_acquire_owned() else {
            let n = budget.max_requests - budget.requests.available_permits();
            let msg = format!("{n} requests in flight on this connection");
            return Err(Refusal::new(ErrorCode::RateLimited, msg));
        };
        let Some(text) = budget.take_chars(chars) else {
            let msg = format!(
                "{} characters in flight on this connection; the limit is {}",
                budget.chars_in_flight(),
                budget.max_chars
            );
            return Err(Refusal::new(ErrorCode::RateLimited, msg));
        };
        Ok((request, text))
    }
}

/// A semaphore whose permits in use are the in-flight gauge.
struct Counted {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Counted {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    fn try_acquire(&self) -> Option<InflightPermit> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        metrics::inflight(self.max - self.permits.available_permits());
        Some(InflightPermit {
            permit: Some(permit),
            max: self.max,
        })
    }
}

/// A request in flight in the process; the gauge follows it in and out.
#[derive(Debug)]
struct InflightPermit {
    permit: Option<OwnedSemaphorePermit>,
    max: usize,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let semaphore = Arc::clone(permit.semaphore());
            drop(permit);
            metrics::inflight(self.max - semaphore.available_permits());
        }
    }
}

/// How often the rate limiter forgets addresses that have paused.
const PRUNE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// Forgets the addresses whose buckets are full again; how many remain.
fn prune(rate: &DefaultKeyedRateLimiter<IpAddr>) -> usize {
    rate.retain_recent();
    rate.shrink_to_fit();
    rate.len()
}

/// Requests per second per client address, bursts of twice as many.
fn rate_limiter(per_second: u32) -> DefaultKeyedRateLimiter<IpAddr> {
    let rate = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    let burst =
        rate.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(std::num::NonZeroU32::MIN));
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

/// An identifier as it may be logged and echoed: whole within the limit,
/// else its first 32 characters.
pub(crate) fn shortened(id: &str) -> &str {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    id.char_indices().nth(32).map_or(id, |(i, _)| &id[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OrchestratorConfig {
        OrchestratorConfig {
            max_inflight: 2,
            max_requests_per_connection: 2,
            max_connection_chars: 8,
            max_text_chars: 8,
            ..OrchestratorConfig::default()
        }
    }

    fn ask<'a>(text: &'a str, connection: Option<OnConnection<'a>>) -> Ask<'a> {
        Ask {
            text: Some(text),
            voice: None,
            ids: &[],
            peer: "10.0.0.1".parse().expect("ip"),
            connection,
        }
    }

    #[test]
    fn addresses_that_paused_are_forgotten() {
        // 500 requests per second: a bucket of 1,000 refills in 2 s, one
        // token in 2 ms.
        let rate = rate_limiter(500);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 64));
            assert!(rate.check_key(&ip).is_ok());
        }
        assert_eq!(rate.len(), 1000, "one entry per address");
        let busy: IpAddr = "10.0.0.9".parse().expect("ip");
        for _ in 0..900 {
            let _ = rate.check_key(&busy);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            prune(&rate),
            1,
            "only the address still short of tokens stays"
        );
        assert!(rate.check_key(&busy).is_ok(), "and it keeps its bucket");
    }

    #[test]
    fn only_oversized_identifiers_are_shortened() {
        let uuid = "98b2239f-4121-4144-878a-cd518efe2a51";
        assert_eq!(shortened(uuid), uuid);
        let long = "é".repeat(100);
        assert_eq!(shortened(&long).chars().count(), 32);
    }

    #[test]
    fn permits_count_until_dropped_and_refusals_keep_their_order() {
        let shutdown = CancellationToken::new();
        let admission = Admission::new(&config(), shutdown.clone());
        let budget = ConnectionBudget::new(&config());
        let on = |duplicate| {
            Some(OnConnection {
                budget: &budget,
                request_id: "r",
                duplicate,
            })
        };
        let first = admission.admit(ask("hello", on(false))).expect("first");
        let refused = admission.admit(ask("hello", on(false))).expect_err("chars");
        assert_eq!(
            refused.message,
            "5 characters in flight on this connection; the limit is 8"
        );
        let refused = admission.admit(ask("hi", on(true))).expect_err("duplicate");
        assert_eq!(refused.message, "request \"r\" is already in flight");
        let second = admission.admit(ask("hi", on(false))).expect("second");
        let refused = admission.admit(ask("hi", on(false))).expect_err("requests");
        assert_eq!(refused.message, "2 requests in flight on this connection");
        let refused = admission.admit(ask("hi", None)).expect_err("inflight");
        assert_eq!(refused.code, ErrorCode::Overloaded);
        drop(first);
        admission.admit(ask("hi", None)).expect("room again");
        let refused = admission.admit(ask("too long!", None)).expect_err("long");
        assert_eq!(refused.code, ErrorCode::TextTooLong);
        shutdown.cancel();
        let refused = admission.admit(ask(" ", None)).expect_err("shutdown first");
        assert_eq!(refused.code, ErrorCode::ShuttingDown);
        drop(second);
    }
}
