//! Back-off after a refusal that said when to retry (`retry_after_ms`).
//!
//! A connection that was refused has its next message read no sooner than
//! the refusal said. A client address refused more than [`STORM`] times
//! in a second is retrying faster than it was told, typically by
//! reconnecting: while that lasts (this second or the last), its new
//! connections and HTTP requests wait too. Held requests of one address
//! are released [`SPACING`] apart, up to 20 a second; past that each waits
//! the whole [`MAX_HOLD`] (still one second after its own arrival, so
//! arrivals spread out stay spread out).
//!
//! A client told to wait never notices. One that retries at once is
//! answered at the pace it was asked to keep, instead of turning refusals
//! into a storm of handshakes, requests and worker calls that takes the
//! CPU from the streams admitted. A held request costs almost nothing
//! while it waits: a WebSocket message stays unread, an HTTP body (at most
//! `--max-message-bytes`) stays buffered. Other clients of the same
//! address that are refused now and then are not held: only a storm is.
//! The threshold is per address as the orchestrator sees it, so behind a
//! proxy that does not keep client addresses all its clients share it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The longest a refusal's `retry_after_ms` holds a request.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(1);
/// Refusals of one address in a second past which the address, not only
/// the refused connections, waits.
const STORM: u32 = 8;
/// The span refusals are counted over.
const SECOND: Duration = Duration::from_secs(1);
/// Held requests of one address are released this far apart, not all at
/// the instant the wait ends: clients refused together would otherwise
/// come back together, a burst whose first steps crowd the worker (and
/// are refused together again). 20 a second per held address.
const SPACING: Duration = Duration::from_millis(50);
/// Addresses remembered at once. A full map records nobody new until the
/// next [`prune`](Backoff::prune): a flood of addresses (an IPv6 client
/// rotating through its prefix) costs memory bounded by this, and no work
/// per refusal beyond a lookup, and loses only the pacing, never a
/// request.
const MAX_ADDRESSES: usize = 65_536;

/// One address's wait.
#[derive(Debug, Clone, Copy)]
struct Wait {
    /// The latest time a refusal of the address said to wait until.
    until: Instant,
    /// When its next held request may be released.
    next: Instant,
    /// When the current second of counting began.
    counting: Instant,
    /// Its refusals in the current second, and in the one before.
    refusals: u32,
    before: u32,
}

impl Wait {
    /// Counts a refusal at `now`.
    fn count(&mut self, now: Instant) {
        let since = now.duration_since(self.counting);
        if since >= SECOND {
            self.before = if since < 2 * SECOND { self.refusals } else { 0 };
            self.refusals = 0;
            self.counting = now;
        }
        self.refusals = self.refusals.saturating_add(1);
    }

    /// Whether it still holds something: a wait, or a count that can still
    /// make a storm.
    fn live(&self, now: Instant) -> bool {
        self.until > now || now.duration_since(self.counting) < 2 * SECOND
    }

    /// Whether the address was refused more than [`STORM`] times in this
    /// second or the one before.
    fn storming(&self, now: Instant) -> bool {
        let since = now.duration_since(self.counting);
        let (this, before) = match since {
            s if s < SECOND => (self.refusals, self.before),
            s if s < 2 * SECOND => (0, self.refusals),
            _ => (0, 0),
        };
        this.max(before) > STORM
    }

    /// A held request's release: `at`, or a spacing after the last one
    /// released, at most [`MAX_HOLD`] from `now`.
    fn release(&mut self, at: Instant, now: Instant) -> Instant {
        let at = at.max(self.next).min(now + MAX_HOLD);
        self.next = at + SPACING;
        at
    }
}

/// The addresses told to wait.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    waits: Mutex<HashMap<IpAddr, Wait>>,
}

impl Backoff {
    /// A request from `peer` was refused with `retry_after`: returns when
    /// its connection's next message may be read.
    pub(crate) fn refused(&self, peer: IpAddr, retry_after: Duration) -> Instant {
        let now = Instant::now();
        let until = now + retry_after.min(MAX_HOLD);
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&peer) {
            return until;
        }
        let wait = map.entry(peer).or_insert(Wait {
            until: now,
            next: now,
            counting: now,
            refusals: 0,
            before: 0,
        });
        wait.until = wait.until.max(until);
        wait.count(now);
        wait.release(until, now)
    }

    /// When a new request from `peer` (a new connection's first message,
    /// an HTTP request) may be read, if its address is storming.
    pub(crate) fn storming(&self, peer: IpAddr) -> Option<Instant> {
        let now = Instant::now();
        let mut map = self.lock();
        let wait = map
            .get_mut(&peer)
            .filter(|w| w.until > now && w.storming(now))?;
        Some(wait.release(wait.until, now))
    }

    /// Forgets the addresses that neither wait nor may be storming; how
    /// many remain.
    pub(crate) fn prune(&self) -> usize {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, w| w.live(now));
        map.shrink_to_fit();
        map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Wait>> {
        // The map holds plain times: one a panicking holder left is still
        // a time.
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_waits_as_long_as_it_was_told_spaced_from_the_others() {
        let backoff = Backoff::default();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(backoff.refused(a, Duration::from_millis(300)), at(300));
        assert_eq!(
            backoff.refused(a, Duration::from_millis(300)),
            at(350),
            "refused together, released a spacing apart"
        );
        assert_eq!(backoff.refused(a, Duration::from_millis(100)), at(400));
        assert_eq!(
            backoff.refused(b, Duration::from_millis(100)),
            at(100),
            "another address has its own spacing"
        );
        assert_eq!(backoff.refused(b, Duration::from_secs(30)), at(1_000));
        assert_eq!(backoff.storming(a), None, "a few refusals are no storm");
        tokio::time::advance(Duration::from_millis(301)).await;
        assert_eq!(backoff.prune(), 2, "both were refused this second");
        tokio::time::advance(2 * SECOND).await;
        assert_eq!(backoff.prune(), 0, "neither waits nor can storm");
    }

    #[tokio::test(start_paused = true)]
    async fn a_storming_address_waits_on_new_requests_too() {
        let backoff = Backoff::default();
        let a = ip("10.0.0.1");
        let wait = Duration::from_millis(900);
        for _ in 0..STORM {
            backoff.refused(a, wait);
        }
        assert_eq!(backoff.storming(a), None, "{STORM} refusals in a second");
        backoff.refused(a, wait);
        let limit = Instant::now() + MAX_HOLD;
        let released: Vec<_> = (0..10).filter_map(|_| backoff.storming(a)).collect();
        assert_eq!(released.len(), 10, "one more is a storm");
        assert!(released.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(released[9], limit, "held no longer than the limit");
        assert_eq!(backoff.storming(ip("10.0.0.2")), None, "only that address");
        // Once its wait is over, nothing waits for it, and a prune keeps
        // its count.
        tokio::time::advance(wait).await;
        assert_eq!(backoff.storming(a), None);
        assert_eq!(backoff.prune(), 1);
        // Refused again in the next second, it is still storming: a
        // storm's held requests come back when the wait ends.
        backoff.refused(a, wait);
        assert!(backoff.storming(a).is_some());
        // A quiet second, and it starts afresh.
        tokio::time::advance(2 * SECOND).await;
        backoff.refused(a, wait);
        assert_eq!(backoff.storming(a), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_addresses_is_bounded() {
        let backoff = Backoff::default();
        let wait = Duration::from_millis(500);
        for i in 0..MAX_ADDRESSES as u128 {
            backoff.refused(IpAddr::from(std::net::Ipv6Addr::from(i << 64)), wait);
        }
        let late = ip("10.0.0.3");
        let held = backoff.refused(late, wait);
        assert_eq!(held, Instant::now() + wait, "its connection still waits");
        assert_eq!(backoff.prune(), MAX_ADDRESSES, "but it was not recorded");
        tokio::time::advance(2 * SECOND).await;
        assert_eq!(backoff.prune(), 0, "the prune forgets them");
        backoff.refused(late, wait);
        assert_eq!(backoff.prune(), 1, "and there is room again");
    }
}
