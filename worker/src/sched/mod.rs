//! Deadline scheduling of synthesis steps across streams, and admission
//! control that protects the streams already admitted.
//!
//! The unit of work is one *step* of a stream: the text part and first
//! decoder window of a clause, or one further window (with the flow block
//! it needs). Each stream has a playout clock ([`Playout`]): once its first
//! frame is sent, frame `k` is due at `first_sent + k × 20 ms`, and leaves
//! the worker up to the send-ahead before that. A stream's next step is
//! due the safety margin before its first frame should *play*: the
//! send-ahead is the listener's buffer, which a busy worker may draw on
//! without anyone hearing it, while a new stream's first step, due at
//! `arrival + first-audio budget`, does not wait behind streams that are
//! only refilling their buffers. (Keyed to when frames should *leave*,
//! streams building their lead took the threads from every newcomer:
//! first audio took 560 ms at the median at 150 % load.) Threads take the
//! runnable step with the earliest deadline (EDF). A stream more than the
//! lookahead ahead of its clock is parked until it needs more. With
//! batching (`Policy::batch` above 1), the thread that takes a step also
//! takes up to `batch − 1` compatible steps due soon after it
//! ([`Streams::companions`]), and runs their decoder windows as one call.
//!
//! Admission is a fluid feasibility test: with the new stream, the compute
//! due by every future deadline (each stream's next step whole, its next
//! decoder window when known, then its audio at its cost) must fit into
//! `threads × efficiency` of the machine. Starting a stream commits the worker to its whole playout, so a
//! request that does not fit is refused at once rather than let everyone
//! fall behind.
//!
//! Nothing here reads the clock: every call takes `now`, so the tests run
//! on a simulated one.

mod playout;
mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tts_frame::FRAME_MS;
use tts_protocol::Delivery;

pub use playout::Playout;
pub use policy::Policy;

/// One frame of audio.
const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// Identifies a stream in the scheduler.
pub type StreamId = u64;

/// What a stream still asks of the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Audio still to produce, seconds.
    pub audio: f64,
    /// Compute seconds per second of audio (the voice's estimate).
    pub cost: f64,
    /// Audio the stream's next step produces at once, seconds, when known
    /// (the next decoder window; for a clause not started, its text part
    /// and first window); `None`: the largest step.
    pub next: Option<f64>,
    /// Whether a clause's steps grow from a small first window to the
    /// largest (see [`surge`]).
    pub grows: bool,
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
    /// should play (or the end of the first-audio budget).
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
    /// Streams of one group (one voice) may batch their steps.
    group: usize,
    /// `None` while a thread runs a step.
    job: Option<J>,
    /// Its last step's frames did not all fit its queue: it runs no step
    /// until [`Streams::unblock`].
    blocked: bool,
}

/// The scheduler's state: every admitted stream. Not thread-safe by
/// itself: the synthesis pool keeps it behind a lock.
#[derive(Debug)]
pub struct Streams<J> {
    policy: Policy,
    slots: HashMap<StreamId, Slot<J>>,
    next_id: StreamId,
    /// Streams admitted, by group.
    groups: Vec<usize>,
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
    /// Seconds after `start` during which the audio is due twice as fast
    /// (see [`surge`]).
    surge: f64,
}

impl<J> Streams<J> {
    /// No streams yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            slots: HashMap::new(),
            next_id: 1,
            groups: Vec::new(),
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

    /// Streams of `group` admitted and not finished.
    pub fn peers(&self, group: usize) -> usize {
        self.groups.get(group).copied().unwrap_or(0)
    }

    /// Whether no stream is admitted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Admits a stream of `group` (its voice) arriving `now` that asks for
    /// `demand`, unless it would make admitted streams late. The job is
    /// added with [`insert`](Self::insert).
    pub fn admit(
        &mut self,
        now: Instant,
        demand: Demand,
        delivery: Delivery,
        group: usize,
    ) -> Result<StreamId, Refusal> {
        if self.policy.admission && !self.fits(now, demand, Duration::ZERO) {
            return Err(Refusal {
                retry_after: self.retry_after(now, demand),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.groups.len() <= group {
            self.groups.resize(group + 1, 0);
        }
        self.groups[group] += 1;
        self.slots.insert(
            id,
            Slot {
                arrival: now,
                playout: Arc::new(Playout::default()),
                produced: 0,
                demand,
                delivery,
                group,
                job: None,
                blocked: false,
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
        self.remove_with_group(id).and_then(|(job, _)| job)
    }

    /// [`remove`](Self::remove), also saying the stream's group.
    pub fn remove_with_group(&mut self, id: StreamId) -> Option<(Option<J>, usize)> {
        let slot = self.slots.remove(&id)?;
        if let Some(n) = self.groups.get_mut(slot.group) {
            *n = n.saturating_sub(1);
        }
        Some((slot.job, slot.group))
    }

    /// Every stream of `group` now costs `cost` compute seconds per second
    /// of audio.
    pub fn reprice(&mut self, group: usize, cost: f64) {
        for slot in self.slots.values_mut().filter(|s| s.group == group) {
            slot.demand.cost = cost;
        }
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

    /// Stream `id` runs no step until [`unblock`](Self::unblock): its
    /// frames wait for room in its queue.
    pub fn block(&mut self, id: StreamId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.blocked = true;
        }
    }

    /// Stream `id` may run again.
    pub fn unblock(&mut self, id: StreamId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.blocked = false;
        }
    }

    /// Stream `id`'s work, unless a thread is running its step.
    pub fn job_mut(&mut self, id: StreamId) -> Option<&mut J> {
        self.slots.get_mut(&id)?.job.as_mut()
    }

    /// Frames stream `id` had produced by its last step.
    pub fn produced(&self, id: StreamId) -> Option<u32> {
        self.slots.get(&id).map(|s| s.produced)
    }

    /// When stream `id`'s next step is due.
    pub fn deadline(&self, id: StreamId, now: Instant) -> Option<Instant> {
        self.slots.get(&id).map(|s| self.slot_deadline(s, now))
    }

    fn slot_deadline(&self, slot: &Slot<J>, now: Instant) -> Instant {
        if slot.produced == 0 {
            return slot.arrival + self.policy.first_audio_budget;
        }
        // Due a margin before its next frame should *play*: a real-time
        // stream's send-ahead is its listener's buffer, which a busy worker
        // may draw on (no listener hears it), while a new stream's first
        // audio may not wait. Fast streams are judged by the same clock.
        let due = self.slot_due(slot, now);
        due.checked_sub(self.policy.safety_margin).unwrap_or(due)
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

    /// `None` when the stream may run now; else when to look again. A
    /// real-time stream is parked when it is more than the lookahead ahead
    /// of what its listener can have played; a fast one, whose frames leave
    /// as soon as they exist, when it is that far ahead of what its reader
    /// has taken.
    fn parked_until(&self, slot: &Slot<J>, now: Instant) -> Option<Instant> {
        if slot.produced == 0 {
            return None;
        }
        let produced = FRAME * slot.produced;
        let (ahead, held_by_reader) = match slot.delivery {
            Delivery::Fast => (produced.saturating_sub(FRAME * slot.playout.sent()), true),
            Delivery::Realtime => {
                let (position, held_by_reader) = slot.playout.position(now)?;
                (produced.saturating_sub(position), held_by_reader)
            }
        };
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
            if slot.job.is_none() || slot.blocked {
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
    /// engine that can share a call), earliest deadline first. A step
    /// joins only while the call, as `call` predicts it for its size,
    /// still ends before every member's first frame is due, unless the
    /// lead is late already (then the largest batch is the quickest way
    /// back). The lead's `wide` is cleared when any join: a batch shares
    /// its thread.
    pub fn companions(
        &mut self,
        lead: &mut Step<J>,
        now: Instant,
        compatible: impl Fn(&J, &J) -> bool,
        call: impl Fn(usize) -> Duration,
    ) -> Vec<Step<J>> {
        if self.policy.batch <= 1 {
            return Vec::new();
        }
        let until = lead.deadline + self.policy.batch_horizon;
        let mut due: Vec<(Instant, StreamId)> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                !slot.blocked
                    && slot.job.as_ref().is_some_and(|j| compatible(&lead.job, j))
                    && self.parked_until(slot, now).is_none()
            })
            .map(|(&id, slot)| (self.slot_deadline(slot, now), id))
            .filter(|&(deadline, _)| deadline <= until)
            .collect();
        due.sort();
        let late = now + call(1) > lead.due;
        let mut earliest = lead.due;
        let mut steps = Vec::new();
        for (deadline, id) in due {
            if steps.len() + 1 >= self.policy.batch {
                break;
            }
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            let slot_due = self.slot_due(slot, now);
            let ends = now + call(steps.len() + 2);
            if !late && ends > earliest.min(slot_due) {
                if ends > earliest {
                    // No larger call ends in time.
                    break;
                }
                // This one is due too soon; a later one may still join.
                continue;
            }
            earliest = earliest.min(slot_due);
            let first = slot.produced == 0;
            if let Some(job) = self.slots.get_mut(&id).and_then(|s| s.job.take()) {
                steps.push(Step {
                    id,
                    job,
                    deadline,
                    due: slot_due,
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

    /// What an admitted stream still asks of the threads: its next step
    /// (the lump: the next decoder window, when known) whole by the step's
    /// deadline, then its audio at its cost.
    fn fluid(&self, slot: &Slot<J>, now: Instant) -> Fluid {
        let d = slot.demand;
        let started = slot.produced > 0;
        let lump_audio = if started {
            d.audio
                .min(d.next.unwrap_or(self.policy.step_audio.as_secs_f64()))
        } else {
            first_step_audio(d.audio)
        };
        Fluid {
            start: secs_after(self.slot_deadline(slot, now), now),
            lump: lump_audio * d.cost,
            rate: d.cost,
            total: d.audio * d.cost,
            surge: surge(d, started, self.policy.step_audio),
        }
    }

    /// Whether every admitted stream, plus `extra` arriving `delay` from
    /// now, can meet its deadlines.
    fn fits(&self, now: Instant, extra: Demand, delay: Duration) -> bool {
        self.fits_behind(now, extra, delay, 0.0)
    }

    /// [`fits`](Self::fits), forgiving `behind` seconds of compute that
    /// admitted streams are already short of.
    fn fits_behind(&self, now: Instant, extra: Demand, delay: Duration, behind: f64) -> bool {
        let mut demands = self.admitted(now);
        demands.push(Fluid {
            start: (delay + self.policy.first_audio_budget).as_secs_f64(),
            lump: first_step_audio(extra.audio) * extra.cost,
            rate: extra.cost,
            total: extra.audio * extra.cost,
            surge: surge(extra, false, self.policy.step_audio),
        });
        let (capacity, slack) = self.bound();
        excess(&demands, capacity) <= slack + behind + 1e-9
    }

    /// The admitted streams' demands as of `now`.
    fn admitted(&self, now: Instant) -> Vec<Fluid> {
        let mut demands = Vec::with_capacity(self.slots.len() + 1);
        demands.extend(self.slots.values().map(|s| self.fluid(s, now)));
        demands
    }

    /// Compute per second admission may promise (threads × efficiency),
    /// and the slack: a safety margin of each thread's time.
    fn bound(&self) -> (f64, f64) {
        let p = &self.policy;
        (
            p.threads as f64 * p.efficiency,
            p.threads as f64 * p.safety_margin.as_secs_f64(),
        )
    }

    /// The smallest delay (to 50 ms, at most 30 s) after which `demand`
    /// would fit, if nothing else arrived. Compute the admitted streams
    /// are already short of (steps due now that the threads have not run
    /// yet, as after a burst of arrivals) is not a new stream's to wait
    /// for: no delay would undo it, and counting it would advise the
    /// longest wait while the threads catch up within moments.
    fn retry_after(&self, now: Instant, demand: Demand) -> Duration {
        let (capacity, slack) = self.bound();
        let behind = (excess(&self.admitted(now), capacity) - slack).max(0.0);
        let fits = |ms: u64| self.fits_behind(now, demand, Duration::from_millis(ms), behind);
        let (mut lo, mut hi) = (0u64, 30_000u64);
        if !fits(hi) {
            return Duration::from_millis(hi);
        }
        while hi - lo > 50 {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Duration::from_millis(hi)
    }
}

/// Audio a clause's first step is counted as: its first decoder window,
/// about 0.1 s, plus the text part, counted as as much audio again.
pub const FIRST_STEP_AUDIO: f64 = 0.3;

/// Audio a stream's first step produces.
fn first_step_audio(audio: f64) -> f64 {
    audio.min(FIRST_STEP_AUDIO)
}

/// How long a stream needs its audio twice as fast as it plays. A
/// clause's decoder windows double up to the largest step, and each is
/// due whole when the one before it has played, so the audio due runs
/// ahead of playback by the window in hand: after `x` seconds of playback
/// about `2x + window` is due, until the windows are the largest; then
/// `x + largest`. A stream not `started` has no window in hand (its first
/// step's audio is mostly its text part); a voice whose steps do not grow
/// has no surge. Counting it keeps a burst of streams admitted in the same
/// instant, whose growing windows all come due together, from running
/// late.
fn surge(d: Demand, started: bool, largest: Duration) -> f64 {
    if !d.grows {
        return 0.0;
    }
    let largest = largest.as_secs_f64();
    let window = if started {
        d.next.unwrap_or(largest)
    } else {
        0.0
    };
    (largest - window).max(0.0)
}

/// The fluid test: the cumulative compute due by every deadline must not
/// exceed `capacity` (threads' worth of compute per second) times the
/// time until then, plus `slack`.
#[cfg(test)]
fn feasible(demands: &[Fluid], capacity: f64, slack: f64) -> bool {
    excess(demands, capacity) <= slack + 1e-9
}

/// The most by which the cumulative compute due by a deadline exceeds
/// `capacity` times the time until then (0 or less: never). The demand is
/// piecewise linear between its breakpoints, so checking at each
/// breakpoint suffices.
fn excess(demands: &[Fluid], capacity: f64) -> f64 {
    // (time, lump added, rate change)
    let mut events: Vec<(f64, f64, f64)> = Vec::with_capacity(demands.len() * 3);
    for d in demands {
        let lump = d.lump.min(d.total);
        let rest = (d.total - lump).max(0.0);
        if d.rate <= 0.0 {
            events.push((d.start, lump, 0.0));
            continue;
        }
        // Twice the rate while its windows grow, as long as audio is left.
        let surge = d.surge.min(rest / (2.0 * d.rate));
        events.push((d.start, lump, 2.0 * d.rate));
        events.push((d.start + surge, 0.0, -d.rate));
        let end = d.start + surge + (rest - 2.0 * d.rate * surge) / d.rate;
        events.push((end, 0.0, -d.rate));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut t, mut due, mut rate) = (0.0f64, 0.0f64, 0.0f64);
    let mut worst = f64::NEG_INFINITY;
    for (at, lump, delta) in events {
        due += rate * (at - t);
        t = at;
        due += lump;
        rate += delta;
        worst = worst.max(due - capacity * t);
    }
    worst
}

#[cfg(test)]
mod tests;
