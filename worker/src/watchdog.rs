//! The runbook's deadlock detection for the synthesis threads: a thread
//! that holds work (one or more streams' steps) and makes no progress for
//! longer than a bound is reported once per episode, with what it was
//! doing (a warning log line and `tts_worker_synthesis_threads_stalled`),
//! and again when it moves on.
//!
//! A thread marks itself busy with the requests it holds when it takes a
//! step and idle when the step is done; a watcher thread looks every
//! 250 ms. Nothing here runs per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::metrics;

/// One synthesis thread's progress.
#[derive(Debug, Default)]
struct Slot {
    /// When its current step began, ms since the epoch plus one; 0 idle.
    busy_since: AtomicU64,
    /// The requests it holds (their ids), and their voice.
    holding: Mutex<(Vec<Arc<str>>, String)>,
}

/// Every synthesis thread's progress.
#[derive(Debug)]
pub(crate) struct Progress {
    epoch: Instant,
    slots: Vec<Slot>,
}

impl Progress {
    pub(crate) fn new(threads: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            slots: (0..threads).map(|_| Slot::default()).collect(),
        })
    }

    /// Thread `thread` takes a step of `requests` in `voice`.
    pub(crate) fn begin<'a>(
        &self,
        thread: usize,
        voice: &str,
        requests: impl Iterator<Item = &'a Arc<str>>,
    ) {
        let Some(slot) = self.slots.get(thread) else {
            return;
        };
        if let Ok(mut holding) = slot.holding.lock() {
            holding.0.clear();
            holding.0.extend(requests.cloned());
            if holding.1 != voice {
                voice.clone_into(&mut holding.1);
            }
        }
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        slot.busy_since.store(ms, Ordering::Release);
    }

    /// Thread `thread` finished its step.
    pub(crate) fn end(&self, thread: usize) {
        if let Some(slot) = self.slots.get(thread) {
            slot.busy_since.store(0, Ordering::Release);
        }
    }

    /// How long each thread has held its current step (`None`: idle).
    fn busy_for(&self, now: Instant) -> impl Iterator<Item = Option<Duration>> + '_ {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        self.slots.iter().map(move |s| {
            let since = s.busy_since.load(Ordering::Acquire);
            (since > 0).then(|| Duration::from_millis(now_ms.saturating_sub(since)))
        })
    }
}

/// Which threads are reported stalled now.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    stalled: Vec<Option<Duration>>,
}

impl Watch {
    /// Looks at every thread once; reports threads that have held a step
    /// longer than `bound` and threads that moved on since.
    pub(crate) fn check(&mut self, progress: &Progress, bound: Duration, now: Instant) {
        self.stalled.resize(progress.slots.len(), None);
        let mut changed = false;
        for (i, busy) in progress.busy_for(now).enumerate() {
            let stuck = busy.filter(|b| *b > bound);
            match (self.stalled[i], stuck) {
                (None, Some(held)) => {
                    let (requests, voice) = progress.slots[i]
                        .holding
                        .lock()
                        .map(|h| (h.0.join(","), h.1.clone()))
                        .unwrap_or_default();
                    warn!(thread = i, held_s = held.as_secs_f64(), bound_s = bound.as_secs_f64(),
                        %voice, requests = %requests,
                        "synthesis thread made no progress: it holds these requests' steps");
                    self.stalled[i] = Some(held);
                    changed = true;
                    metrics::thread_stall(true, self.count());
                }
                (Some(_), None) => {
                    info!(thread = i, "synthesis thread progressing again");
                    self.stalled[i] = None;
                    changed = true;
                }
                _ => {}
            }
        }
        if changed {
            metrics::thread_stall(false, self.count());
        }
    }

    fn count(&self) -> usize {
        self.stalled.iter().filter(|s| s.is_some()).count()
    }
}

/// Watches `progress` every 250 ms on a thread of its own until `closed`
/// says so.
pub(crate) fn spawn(
    progress: Arc<Progress>,
    bound: Duration,
    closed: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("synth-watchdog".into())
        .spawn(move || {
            let mut watch = Watch::default();
            while !closed() {
                watch.check(&progress, bound, Instant::now());
                std::thread::sleep(Duration::from_millis(250));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_holding_a_step_past_the_bound_is_reported_once_then_cleared() {
        let progress = Progress::new(2);
        let ids: Vec<Arc<str>> = vec!["r1".into(), "r2".into()];
        let mut watch = Watch::default();
        let t0 = Instant::now();
        progress.begin(1, "joe", ids.iter());
        watch.check(&progress, Duration::from_secs(5), t0);
        assert_eq!(watch.count(), 0, "busy, not yet stalled");
        let later = t0 + Duration::from_secs(6);
        watch.check(&progress, Duration::from_secs(5), later);
        assert_eq!(watch.count(), 1);
        assert!(watch.stalled[1].is_some() && watch.stalled[0].is_none());
        watch.check(
            &progress,
            Duration::from_secs(5),
            later + Duration::from_secs(1),
        );
        assert_eq!(watch.count(), 1, "one episode, reported once");
        progress.end(1);
        watch.check(
            &progress,
            Duration::from_secs(5),
            later + Duration::from_secs(2),
        );
        assert_eq!(watch.count(), 0);
        let holding = progress.slots[1].holding.lock().expect("lock");
        assert_eq!((holding.0.len(), holding.1.as_str()), (2, "joe"));
    }
}
