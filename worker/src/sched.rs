//! Deadline scheduling of synthesis steps across streams, and admission
//! control that protects the streams already admitted.
//!
//! The unit of work is one *step* of a stream: the text part and first
//! decoder window of a clause, or one further window (with the flow block
//! it needs). Each stream has a playout clock ([`Playout`]): once its first
//! frame is sent, frame `k` is due at `first_sent + k × 20 ms`, and leaves
//! the worker up to the send-ahead before that. A stream's next step is
//! due the safety margin before its first frame should leave, so that the
//! listener's buffer stays full and frames keep a steady pace (the
//! send-ahead is then left to absorb what goes wrong); a new stream's first
//! step is due at `arrival + first-audio budget`. Threads take the
//! runnable step with the earliest deadline (EDF). A stream more than the
//! lookahead ahead of its clock is parked until it needs more. With
//! batching (`Policy::batch` above 1), the thread that takes a step also
//! takes up to `batch − 1` compatible steps due soon after it
//! ([`Streams::companions`]), and runs their decoder windows as one call.
//!
//! Admission is a fluid feasibility test: with the new stream, the compute
//! due by every future deadline must fit into `threads × efficiency` of the
//! machine. Starting a stream commits the worker to its whole playout, so a
//! request that does not fit is refused at once rather than let everyone
//! fall behind.
//!
//! Nothing here reads the clock: every call takes `now`, so the tests run
//! on a simulated one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tts_frame::FRAME_MS;

/// One frame of audio.
const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// How the scheduler and the admission test behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Synthesis threads (each runs one step at a time).
    pub threads: usize,
    /// A new stream's first step is due this long after it arrives.
    pub first_audio_budget: Duration,
    /// A stream more than this far ahead of its playout clock is parked.
    pub lookahead: Duration,
    /// How far ahead of its due time a real-time stream's frame leaves.
    pub send_ahead: Duration,
    /// A stream's next step is due this long before its first frame
    /// should leave.
    pub safety_margin: Duration,
    /// Fraction of the threads' time the admission test may promise away;
    /// the rest absorbs steps that cannot be pre-empted, estimate error and
    /// everything else the machine runs.
    pub efficiency: f64,
    /// Audio seconds of a stream's next step that must be ready by its
    /// deadline all at once (the largest decoder window).
    pub step_audio: Duration,
    /// Refuse requests that do not fit (off: admit up to the hard limit).
    pub admission: bool,
    /// Most steps one thread runs together (their decoder windows in as
    /// few calls as possible); 1 runs one step at a time.
    pub batch: usize,
    /// A step joins the earliest-deadline step's batch only if its own
    /// deadline is at most this much later.
    pub batch_horizon: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threads: 2,
            first_audio_budget: Duration::from_millis(100),
            lookahead: Duration::from_secs(2),
            send_ahead: Duration::from_secs(1),
            safety_margin: Duration::from_millis(100),
            efficiency: 0.8,
            step_audio: Duration::from_millis(1_500),
            admission: true,
            batch: 1,
            batch_horizon: Duration::from_millis(500),
        }
    }
}

/// A stream's playout clock, shared by the scheduler and the task that
/// sends the stream's frames.
#[derive(Debug, Default)]
pub struct Playout {
    /// When the first frame was sent.
    anchor: OnceLock<Instant>,
    /// How far the clock has moved back because the reader held frames up
    /// (a listener cannot play what it has not received), µs.
    shift_us: AtomicU64,
    /// Frames sent.
    sent: AtomicU32,
}

impl Playout {
    /// Starts the clock: the first frame left at `at`.
    pub fn start(&self, at: Instant) {
        let _ = self.anchor.set(at);
    }

    /// When the first frame was sent, if it was.
    pub fn anchor(&self) -> Option<Instant> {
        self.anchor.get().copied()
    }

    /// When frame `k` is due; `None` before the first frame is sent.
    pub fn due(&self, k: u32) -> Option<Instant> {
        self.anchor().map(|a| a + self.shift() + FRAME * k)
    }

    /// The reader held frames up: the clock moves back by `by`.
    pub fn shift_by(&self, by: Duration) {
        self.shift_us
            .fetch_add(by.as_micros() as u64, Ordering::Relaxed);
    }

    fn shift(&self) -> Duration {
        Duration::from_micros(self.shift_us.load(Ordering::Relaxed))
    }

    /// Counts one more frame sent.
    pub fn sent_one(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Audio the listener can have played by `now`: the time since the
    /// first frame, but never more than what was sent.
    fn position(&self, now: Instant) -> Option<(Duration, bool)> {
        let anchor = self.anchor()? + self.shift();
        let elapsed = now.saturating_duration_since(anchor);
        let sent = FRAME * self.sent.load(Ordering::Relaxed);
        Some(if sent < elapsed {
            (sent, true)
        } else {
            (elapsed, false)
        })
    }
}

/// Identifies a stream in the scheduler.
pub type StreamId = u64;

/// When a stream's frames leave, which decides whether it is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// On the playout clock: a stream far enough ahead is parked.
    #[default]
    Realtime,
    /// As soon as synthesised: never parked, but its deadlines still come
    /// from its playout clock, so every stream due sooner goes first.
    Fast,
}

/// What a stream still asks of the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Audio still to produce, seconds.
    pub audio: f64,
    /// Compute seconds per second of audio (the voice's estimate).
    pub cost: f64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    /// When the request would fit, as far as the test can tell now.
    pub retry_after: Duration,
}

/// What a thread should do next.
#[derive(Debug)]
pub enum Next<J> {
    /// Run one step of this stream.
    Run(Step<J>),
    /// Nothing is runnable: wait for new work or until this time.
    Wait(Option<Instant>),
}

/// One step handed to a thread.
#[derive(Debug)]
pub struct Step<J> {
    /// The stream.
    pub id: StreamId,
    /// Its work, to hand back with [`Streams::put_back`].
    pub job: J,
    /// Its place in the queue: the safety margin before its first frame
    /// should leave (or the end of the first-audio budget).
    pub deadline: Instant,
    /// When its first frame is due on the playout clock (or, for a first
    /// step, the end of the first-audio budget): finishing later is late.
    pub due: Instant,
    /// Whether this is the stream's first step.
    pub first: bool,
    /// Whether the step may use more intra-op threads: fewer streams are
    /// active than there are threads.
    pub wide: bool,
}

#[derive(Debug)]
struct Slot<J> {
    arrival: Instant,
    playout: Arc<Playout>,
    /// Frames produced so far.
    produced: u32,
    demand: Demand,
    delivery: Delivery,
    /// `None` while a thread runs a step.
    job: Option<J>,
}

/// The scheduler's state: every admitted stream. Not thread-safe by
/// itself: the synthesis pool keeps it behind a lock.
#[derive(Debug)]
pub struct Streams<J> {
    policy: Policy,
    slots: HashMap<StreamId, Slot<J>>,
    next_id: StreamId,
}

/// Seconds from `now` to `t`, 0 if `t` has passed.
fn secs_after(t: Instant, now: Instant) -> f64 {
    t.saturating_duration_since(now).as_secs_f64()
}

/// One stream's demand in the fluid test: nothing before `start` (seconds
/// from now), then `lump` seconds of compute at once (the step due then),
/// then `rate` compute seconds per second until `total` is reached.
#[derive(Debug, Clone, Copy)]
struct Fluid {
    start: f64,
    lump: f64,
    rate: f64,
    total: f64,
}

impl<J> Streams<J> {
    /// No streams yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            slots: HashMap::new(),
            next_id: 1,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Streams admitted and not finished.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no stream is admitted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Admits a stream arriving `now` that asks for `demand`, unless it
    /// would make admitted streams late. The job is added with
    /// [`insert`](Self::insert).
    pub fn admit(
        &mut self,
        now: Instant,
        demand: Demand,
        delivery: Delivery,
    ) -> Result<StreamId, Refusal> {
        if self.policy.admission && !self.fits(now, demand, Duration::ZERO) {
            return Err(Refusal {
                retry_after: self.retry_after(now, demand),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(
            id,
            Slot {
                arrival: now,
                playout: Arc::new(Playout::default()),
                produced: 0,
                demand,
                delivery,
                job: None,
            },
        );
        Ok(id)
    }

    /// Parks no stream from now on (the worker is draining: streams should
    /// finish as fast as the machine allows).
    pub fn unpark_all(&mut self) {
        self.policy.lookahead = Duration::MAX;
    }

    /// Gives an admitted stream its work; it becomes runnable.
    pub fn insert(&mut self, id: StreamId, job: J) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.job = Some(job);
        }
    }

    /// The stream's playout clock.
    pub fn playout(&self, id: StreamId) -> Option<Arc<Playout>> {
        self.slots.get(&id).map(|s| Arc::clone(&s.playout))
    }

    /// Removes a stream (cancelled, disconnected or finished); its queued
    /// work is dropped at once, a running step is dropped when it returns.
    pub fn remove(&mut self, id: StreamId) -> Option<J> {
        self.slots.remove(&id).and_then(|s| s.job)
    }

    /// Hands a stream's work back after a step: it has now produced
    /// `produced` frames and still asks for `demand`. Returns the job if
    /// the stream was removed meanwhile (the caller drops it).
    pub fn put_back(&mut self, id: StreamId, job: J, produced: u32, demand: Demand) -> Option<J> {
        match self.slots.get_mut(&id) {
            Some(slot) => {
                slot.produced = produced;
                slot.demand = demand;
                slot.job = Some(job);
                None
            }
            None => Some(job),
        }
    }

    /// When stream `id`'s next step is due.
    pub fn deadline(&self, id: StreamId, now: Instant) -> Option<Instant> {
        self.slots.get(&id).map(|s| self.slot_deadline(s, now))
    }

    fn slot_deadline(&self, slot: &Slot<J>, now: Instant) -> Instant {
        if slot.produced == 0 {
            return slot.arrival + self.policy.first_audio_budget;
        }
        // Fast streams send at once: their deadline keeps them behind every
        // real-time stream that needs its frames sooner.
        let lead = match slot.delivery {
            Delivery::Realtime => self.policy.send_ahead + self.policy.safety_margin,
            Delivery::Fast => self.policy.safety_margin,
        };
        let due = self.slot_due(slot, now);
        due.checked_sub(lead).unwrap_or(due)
    }

    /// When the next frame the stream produces is due.
    fn slot_due(&self, slot: &Slot<J>, now: Instant) -> Instant {
        if slot.produced == 0 {
            return slot.arrival + self.policy.first_audio_budget;
        }
        match slot.playout.position(now) {
            // Frames produced but not yet sent: the clock starts about now.
            None => now + FRAME * slot.produced,
            // The reader holds frames up: the listener can be no further
            // than what was sent, so the clock stands there.
            Some((sent, true)) => now + (FRAME * slot.produced).saturating_sub(sent),
            Some((_, false)) => slot
                .playout
                .due(slot.produced)
                .unwrap_or_else(|| now + FRAME * slot.produced),
        }
    }

    /// `None` when the stream may run now; else when to look again.
    fn parked_until(&self, slot: &Slot<J>, now: Instant) -> Option<Instant> {
        if slot.produced == 0 || slot.delivery == Delivery::Fast {
            return None;
        }
        let (position, held_by_reader) = slot.playout.position(now)?;
        let ahead = (FRAME * slot.produced).saturating_sub(position);
        if ahead <= self.policy.lookahead {
            return None;
        }
        Some(if held_by_reader {
            // Wakes when the reader takes frames; look again soon.
            now + Duration::from_millis(50)
        } else {
            now + (ahead - self.policy.lookahead)
        })
    }

    /// Takes the runnable step with the earliest deadline.
    pub fn next(&mut self, now: Instant) -> Next<J> {
        let mut best: Option<(Instant, StreamId)> = None;
        let mut wake: Option<Instant> = None;
        for (&id, slot) in &self.slots {
            if slot.job.is_none() {
                continue;
            }
            if let Some(at) = self.parked_until(slot, now) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                continue;
            }
            let deadline = self.slot_deadline(slot, now);
            if best.is_none_or(|(d, i)| (deadline, id) < (d, i)) {
                best = Some((deadline, id));
            }
        }
        let Some((deadline, id)) = best else {
            return Next::Wait(wake);
        };
        let wide = self.slots.len() < self.policy.threads;
        let due = match self.slots.get(&id) {
            Some(slot) => self.slot_due(slot, now),
            None => return Next::Wait(wake),
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return Next::Wait(wake);
        };
        match slot.job.take() {
            Some(job) => Next::Run(Step {
                id,
                job,
                deadline,
                due,
                first: slot.produced == 0,
                wide,
            }),
            None => Next::Wait(wake),
        }
    }

    /// The steps that run together with `lead` (just taken by
    /// [`next`](Self::next)): up to `batch − 1` other runnable streams whose
    /// deadlines are at most the batch horizon after the lead's and whose
    /// work `compatible` accepts beside the lead's (the same voice, an
    /// engine that can share a call), earliest deadline first. The lead's
    /// `wide` is cleared when any join: a batch shares its thread.
    pub fn companions(
        &mut self,
        lead: &mut Step<J>,
        now: Instant,
        compatible: impl Fn(&J, &J) -> bool,
    ) -> Vec<Step<J>> {
        if self.policy.batch <= 1 {
            return Vec::new();
        }
        let until = lead.deadline + self.policy.batch_horizon;
        let mut due: Vec<(Instant, StreamId)> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.job.as_ref().is_some_and(|j| compatible(&lead.job, j))
                    && self.parked_until(slot, now).is_none()
            })
            .map(|(&id, slot)| (self.slot_deadline(slot, now), id))
            .filter(|&(deadline, _)| deadline <= until)
            .collect();
        due.sort();
        due.truncate(self.policy.batch - 1);
        let mut steps = Vec::with_capacity(due.len());
        for (deadline, id) in due {
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            let due = self.slot_due(slot, now);
            let first = slot.produced == 0;
            if let Some(job) = self.slots.get_mut(&id).and_then(|s| s.job.take()) {
                steps.push(Step {
                    id,
                    job,
                    deadline,
                    due,
                    first,
                    wide: false,
                });
            }
        }
        if !steps.is_empty() {
            lead.wide = false;
        }
        steps
    }

    /// Fraction of the threads the admitted streams need while they play:
    /// the sum of their costs over the thread count.
    pub fn utilisation(&self) -> f64 {
        let need: f64 = self
            .slots
            .values()
            .filter(|s| s.demand.audio > 0.0)
            .map(|s| s.demand.cost)
            .sum();
        need / self.policy.threads.max(1) as f64
    }

    fn fluid(&self, slot: &Slot<J>, now: Instant) -> Fluid {
        let d = slot.demand;
        let lump_audio = if slot.produced == 0 {
            first_step_audio(d.audio)
        } else {
            d.audio.min(self.policy.step_audio.as_secs_f64())
        };
        Fluid {
            start: secs_after(self.slot_deadline(slot, now), now),
            lump: lump_audio * d.cost,
            rate: d.cost,
            total: d.audio * d.cost,
        }
    }

    /// Whether every admitted stream, plus `extra` arriving `delay` from
    /// now, can meet its deadlines.
    fn fits(&self, now: Instant, extra: Demand, delay: Duration) -> bool {
        let mut demands: Vec<Fluid> = self.slots.values().map(|s| self.fluid(s, now)).collect();
        demands.push(Fluid {
            start: (delay + self.policy.first_audio_budget).as_secs_f64(),
            lump: first_step_audio(extra.audio) * extra.cost,
            rate: extra.cost,
            total: extra.audio * extra.cost,
        });
        let p = &self.policy;
        let capacity = p.threads as f64 * p.efficiency;
        let slack = p.threads as f64 * p.safety_margin.as_secs_f64();
        feasible(&demands, capacity, slack)
    }

    /// The smallest delay (to 50 ms, at most 30 s) after which `demand`
    /// would fit, if nothing else arrived.
    fn retry_after(&self, now: Instant, demand: Demand) -> Duration {
        let (mut lo, mut hi) = (0u64, 30_000u64);
        if !self.fits(now, demand, Duration::from_millis(hi)) {
            return Duration::from_millis(hi);
        }
        while hi - lo > 50 {
            let mid = (lo + hi) / 2;
            if self.fits(now, demand, Duration::from_millis(mid)) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Duration::from_millis(hi)
    }
}

/// Audio a stream's first step produces: its first decoder window, about
/// 0.1 s, plus the text part, counted as as much audio again.
fn first_step_audio(audio: f64) -> f64 {
    audio.min(0.3)
}

/// The fluid test: the cumulative compute due by every deadline must not
/// exceed `capacity` (threads' worth of compute per second) times the
/// time until then, plus `slack`. The demand is piecewise linear between
/// its breakpoints, so checking at each breakpoint suffices.
fn feasible(demands: &[Fluid], capacity: f64, slack: f64) -> bool {
    // (time, lump added, rate change)
    let mut events: Vec<(f64, f64, f64)> = Vec::with_capacity(demands.len() * 2);
    for d in demands {
        let lump = d.lump.min(d.total);
        events.push((d.start, lump, d.rate));
        let rest = (d.total - lump).max(0.0);
        let end = if d.rate > 0.0 {
            d.start + rest / d.rate
        } else {
            d.start
        };
        events.push((end, 0.0, -d.rate));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut t, mut due, mut rate) = (0.0f64, 0.0f64, 0.0f64);
    for (at, lump, delta) in events {
        due += rate * (at - t);
        t = at;
        due += lump;
        rate += delta;
        if due > capacity * t + slack + 1e-9 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> Policy {
        Policy {
            threads: 1,
            first_audio_budget: ms(100),
            lookahead: ms(2_000),
            send_ahead: ms(0),
            safety_margin: ms(100),
            efficiency: 1.0,
            step_audio: ms(500),
            admission: true,
            batch: 1,
            batch_horizon: ms(500),
        }
    }

    fn demand(audio: f64) -> Demand {
        Demand { audio, cost: 0.1 }
    }

    fn run(streams: &mut Streams<&'static str>, now: Instant) -> Step<&'static str> {
        match streams.next(now) {
            Next::Run(step) => step,
            Next::Wait(w) => panic!("nothing runnable (wake {w:?})"),
        }
    }

    /// Adds a stream whose clock started at `anchor`, that has produced
    /// `produced` frames and sent `sent` of them.
    fn playing(
        s: &mut Streams<&'static str>,
        name: &'static str,
        anchor: Instant,
        produced: u32,
        sent: u32,
    ) -> StreamId {
        let id = s
            .admit(anchor, demand(10.0), Delivery::Realtime)
            .expect("admitted");
        s.insert(id, name);
        let slot = s.slots.get_mut(&id).expect("slot");
        slot.produced = produced;
        slot.playout.start(anchor);
        for _ in 0..sent {
            slot.playout.sent_one();
        }
        id
    }

    #[test]
    fn the_earliest_deadline_runs_first() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        // Both have produced 300 ms; b's clock started 150 ms earlier.
        let a = playing(&mut s, "a", t0, 15, 15);
        let b = playing(&mut s, "b", t0 - ms(150), 15, 15);
        assert_eq!(s.deadline(a, t0), Some(t0 + ms(300 - 100)));
        assert_eq!(s.deadline(b, t0), Some(t0 + ms(150 - 100)));
        let step = run(&mut s, t0);
        assert_eq!((step.id, step.job), (b, "b"));
        assert_eq!(run(&mut s, t0).id, a, "then a");
    }

    #[test]
    fn a_real_time_step_is_due_before_its_frames_should_leave() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            send_ahead: ms(1_000),
            admission: false,
            ..policy()
        });
        // 1.5 s produced: frame 75 is due at t0 + 1.5 s and leaves at
        // t0 + 0.5 s, so the step that makes it is due at t0 + 0.4 s.
        let id = playing(&mut s, "listener", t0, 75, 50);
        assert_eq!(s.deadline(id, t0), Some(t0 + ms(400)));
        // A fast stream sends at once: only the margin counts.
        let fast = s.admit(t0, demand(10.0), Delivery::Fast).expect("fast");
        s.insert(fast, "fast");
        let slot = s.slots.get_mut(&fast).expect("slot");
        slot.produced = 75;
        slot.playout.start(t0);
        assert_eq!(s.deadline(fast, t0), Some(t0 + ms(1_400)));
    }

    #[test]
    fn a_stream_far_enough_ahead_is_parked_until_it_needs_more() {
        let t0 = Instant::now();
        let mut s = Streams::new(policy());
        // 2.5 s produced, clock at 0: 2.5 s ahead, parked for 0.5 s.
        let id = playing(&mut s, "a", t0, 125, 125);
        match s.next(t0) {
            Next::Wait(Some(at)) => assert_eq!(at, t0 + ms(500)),
            other => panic!("{other:?}"),
        }
        match s.next(t0 + ms(499)) {
            Next::Wait(Some(_)) => {}
            other => panic!("still parked at 499 ms: {other:?}"),
        }
        let step = run(&mut s, t0 + ms(500));
        assert_eq!(step.id, id, "woken when 2 s ahead");
    }

    #[test]
    fn a_fast_stream_is_never_parked_but_yields_to_streams_due_sooner() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        // A fast stream 10 s ahead of its clock still runs when alone.
        let fast = s.admit(t0, demand(60.0), Delivery::Fast).expect("fast");
        s.insert(fast, "fast");
        let slot = s.slots.get_mut(&fast).expect("slot");
        slot.produced = 500;
        slot.playout.start(t0);
        for _ in 0..500 {
            slot.playout.sent_one();
        }
        assert_eq!(run(&mut s, t0).id, fast);
        s.put_back(fast, "fast", 500, demand(50.0));
        // A listener's stream due sooner goes first.
        let listener = playing(&mut s, "listener", t0, 25, 25);
        assert_eq!(run(&mut s, t0).id, listener);
        assert_eq!(run(&mut s, t0).id, fast);
    }

    #[test]
    fn a_reader_that_does_not_read_keeps_its_stream_parked() {
        let t0 = Instant::now();
        let mut s = Streams::new(policy());
        // 2.2 s produced, only 5 frames (100 ms) sent: the listener cannot
        // be past 100 ms however much time passes.
        let id = playing(&mut s, "a", t0, 110, 5);
        for later in [ms(0), ms(1_000), ms(60_000)] {
            assert!(
                matches!(s.next(t0 + later), Next::Wait(_)),
                "parked after {later:?}"
            );
        }
        // Its next step is not late: the listener has 2.1 s left.
        assert_eq!(
            s.deadline(id, t0 + ms(60_000)),
            Some(t0 + ms(60_000 + 2_100 - 100))
        );
        // Once the reader takes frames again, the stream runs.
        let clock = s.playout(id).expect("clock");
        for _ in 5..100 {
            clock.sent_one();
        }
        assert_eq!(run(&mut s, t0 + ms(60_000)).id, id);
    }

    #[test]
    fn a_first_window_beats_a_later_window_that_has_slack() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        // Playing, 1 s ahead: due at t0 + 1 s − 100 ms.
        playing(&mut s, "playing", t0, 50, 50);
        let new = s
            .admit(t0, demand(3.0), Delivery::Realtime)
            .expect("admitted");
        s.insert(new, "new");
        let step = run(&mut s, t0);
        assert_eq!(step.job, "new", "first audio is due at t0 + 100 ms");
        assert!(step.first);
    }

    #[test]
    fn a_later_window_beats_a_first_window_when_about_to_miss() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        // Playing with only 150 ms ahead: due at t0 + 50 ms, before the
        // new stream's t0 + 100 ms.
        playing(&mut s, "playing", t0, 50, 50);
        let now = t0 + ms(850);
        let new = s
            .admit(now, demand(3.0), Delivery::Realtime)
            .expect("admitted");
        s.insert(new, "new");
        let step = run(&mut s, now);
        assert_eq!(step.job, "playing");
        assert!(!step.first);
        assert_eq!(step.deadline, t0 + ms(900));
    }

    #[test]
    fn cancelling_removes_queued_work() {
        let t0 = Instant::now();
        let mut s = Streams::new(policy());
        let id = s
            .admit(t0, demand(1.0), Delivery::Realtime)
            .expect("admitted");
        s.insert(id, "gone");
        assert_eq!(s.remove(id), Some("gone"), "queued work is dropped at once");
        assert!(matches!(s.next(t0), Next::Wait(None)));
        // A running step comes back to nothing.
        let id = s
            .admit(t0, demand(1.0), Delivery::Realtime)
            .expect("admitted");
        s.insert(id, "running");
        let step = run(&mut s, t0);
        assert_eq!(s.remove(id), None);
        assert_eq!(s.put_back(id, step.job, 5, demand(0.9)), Some("running"));
        assert!(s.is_empty());
    }

    #[test]
    fn admission_refuses_exactly_when_owed_work_exceeds_capacity() {
        let t0 = Instant::now();
        let mut s: Streams<&str> = Streams::new(Policy {
            safety_margin: ms(0),
            ..policy()
        });
        // Long streams that each need 30 % of the one thread: three fit
        // (90 %), a fourth would need 120 %.
        let long = Demand {
            audio: 600.0,
            cost: 0.3,
        };
        let mut admitted = 0;
        while let Ok(id) = s.admit(t0, long, Delivery::Realtime) {
            admitted += 1;
            assert!(admitted < 10, "admission never refused");
            // It starts playing with 1 s of audio ahead.
            let slot = s.slots.get_mut(&id).expect("slot");
            slot.produced = 50;
            slot.playout.start(t0);
        }
        assert_eq!(admitted, 3);
        assert!((s.utilisation() - 0.9).abs() < 1e-9);
        // A short request still fits beside them.
        let short = Demand {
            audio: 0.1,
            cost: 0.3,
        };
        assert!(s.admit(t0, short, Delivery::Realtime).is_ok());
    }

    #[test]
    fn a_reader_that_stopped_reading_does_not_block_admission() {
        let t0 = Instant::now();
        let mut s: Streams<&str> = Streams::new(Policy {
            safety_margin: ms(0),
            ..policy()
        });
        // A stream whose reader took 5 frames and stopped, a minute ago.
        let stalled = playing(&mut s, "stalled", t0, 110, 5);
        let later = t0 + ms(60_000);
        assert!(s.deadline(stalled, later) > Some(later));
        assert!(s.admit(later, demand(5.0), Delivery::Realtime).is_ok());
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let t0 = Instant::now();
        let mut s: Streams<&str> = Streams::new(policy());
        // One stream using 60 % of the thread for 5 s of audio (about 4.8 s
        // of compute time).
        let heavy = Demand {
            audio: 5.0,
            cost: 0.6,
        };
        s.admit(t0, heavy, Delivery::Realtime)
            .expect("the first fits");
        let refusal = s
            .admit(t0, heavy, Delivery::Realtime)
            .expect_err("a second does not fit");
        // Together they need 120 %: the second fits once the first's
        // remaining work, and the overlap, fit (about 1.8 s later).
        let secs = refusal.retry_after.as_secs_f64();
        assert!((1.5..=5.0).contains(&secs), "retry after {secs} s");
        // Retried that much later (the first stream untouched), it fits.
        assert!(s.fits(t0, heavy, refusal.retry_after));
    }

    #[test]
    fn without_admission_everything_is_admitted() {
        let t0 = Instant::now();
        let mut s: Streams<&str> = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        for _ in 0..100 {
            s.admit(t0, demand(600.0), Delivery::Realtime)
                .expect("admitted");
        }
        assert_eq!(s.len(), 100);
    }

    #[test]
    fn wide_steps_only_when_fewer_streams_than_threads() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            threads: 2,
            admission: false,
            ..policy()
        });
        let a = s.admit(t0, demand(1.0), Delivery::Realtime).expect("a");
        s.insert(a, "a");
        assert!(run(&mut s, t0).wide, "one stream on two threads");
        let b = s.admit(t0, demand(1.0), Delivery::Realtime).expect("b");
        s.insert(b, "b");
        assert!(!run(&mut s, t0).wide, "two streams on two threads");
    }

    #[test]
    fn a_batch_takes_the_compatible_steps_due_soon_after_the_lead() {
        let t0 = Instant::now();
        let mut s = Streams::new(Policy {
            admission: false,
            batch: 3,
            batch_horizon: ms(300),
            ..policy()
        });
        // Deadlines (produced − 100 ms): a 100, b 200, other 240, c 300,
        // d 500 (beyond the horizon); e is parked (2.5 s ahead).
        let a = playing(&mut s, "a", t0, 10, 10);
        let b = playing(&mut s, "b", t0, 15, 15);
        playing(&mut s, "other voice", t0, 17, 17);
        let c = playing(&mut s, "c", t0, 20, 20);
        playing(&mut s, "d", t0, 30, 30);
        playing(&mut s, "e", t0, 125, 125);
        let same_voice = |lead: &&str, other: &&str| lead.len() == other.len();
        let mut lead = run(&mut s, t0);
        assert_eq!(lead.id, a);
        let batch = s.companions(&mut lead, t0, same_voice);
        let ids: Vec<StreamId> = batch.iter().map(|st| st.id).collect();
        assert_eq!(ids, [b, c], "earliest compatible first, up to 3 in all");
        assert_eq!(batch[1].deadline, t0 + ms(300));
        assert!(!lead.wide);
        // Taken steps are running: the next lead is the one left behind.
        let mut next = run(&mut s, t0);
        assert_eq!(next.job, "other voice");
        let rest = s.companions(&mut next, t0, |_, _| true);
        let names: Vec<&str> = rest.iter().map(|st| st.job).collect();
        assert_eq!(names, ["d"], "within 300 ms of 240 ms; e stays parked");
        // Without batching, nothing joins.
        let mut single = Streams::new(Policy {
            admission: false,
            ..policy()
        });
        playing(&mut single, "x", t0, 10, 10);
        playing(&mut single, "y", t0, 10, 10);
        let mut lead = run(&mut single, t0);
        assert!(single.companions(&mut lead, t0, |_, _| true).is_empty());
    }

    #[test]
    fn the_fluid_test_checks_every_breakpoint() {
        let d = |start, lump, rate, total| Fluid {
            start,
            lump,
            rate,
            total,
        };
        // Half a thread for 10 s fits one thread.
        assert!(feasible(&[d(0.0, 0.0, 0.5, 5.0)], 1.0, 0.0));
        // Two lumps of 0.6 s due at 1 s do not.
        assert!(!feasible(
            &[d(1.0, 0.6, 0.0, 0.6), d(1.0, 0.6, 0.0, 0.6)],
            1.0,
            0.0
        ));
        // Unless one is due later.
        assert!(feasible(
            &[d(1.0, 0.6, 0.0, 0.6), d(2.0, 0.6, 0.0, 0.6)],
            1.0,
            0.0
        ));
        // A rate above capacity fails once its lump is used up.
        assert!(!feasible(&[d(0.0, 0.0, 1.2, 12.0)], 1.0, 0.5));
    }
}
