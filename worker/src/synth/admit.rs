//! Admission: what a request would cost, whether it fits, and how its
//! job and its pacer start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::cost::CallCost;
use super::pacer::Sender;
use super::queue::{self, FrameQueue};
use super::thread::{AudioState, Job, audio_fault};
use super::{Output, SynthPool};
use crate::audio::{Framer, Resampler};
use crate::engine::ClauseState;
use crate::request::SpeechRequest;
use crate::sched::{Demand, Playout, StreamId};
use crate::text::Clause;

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// As many requests as allowed are in flight.
    #[error("{0} requests are already in flight")]
    Full(usize),
    /// The text would be more audio than one request may have.
    #[error("the text would be about {estimate:.0} s of audio; the limit is {limit:.0} s")]
    TooLong {
        /// Estimated audio, seconds.
        estimate: f64,
        /// The limit, seconds.
        limit: f64,
    },
    /// The request would make admitted streams late.
    #[error("the worker is at capacity; retry in {} ms", retry_after.as_millis())]
    Overloaded {
        /// When it would fit, as far as the worker can tell.
        retry_after: Duration,
    },
}

/// A ratio kept as decayed sums: recent observations weigh most, and
/// large ones more than small ones.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ratio {
    pub(super) num: f64,
    pub(super) den: f64,
}

impl Ratio {
    /// Each observation keeps this share of the past (≈ the last 50 count).
    const KEEP: f64 = 0.98;

    pub(super) fn seeded(value: f64) -> Self {
        Self {
            num: value,
            den: 1.0,
        }
    }

    pub(super) fn add(&mut self, num: f64, den: f64) {
        self.num = self.num * Self::KEEP + num;
        self.den = self.den * Self::KEEP + den;
    }

    pub(super) fn value(&self) -> f64 {
        if self.den > 0.0 {
            self.num / self.den
        } else {
            0.0
        }
    }
}

/// What the worker has measured about a voice.
#[derive(Debug, Clone)]
pub(super) struct Estimate {
    /// The voice's name (a metric label).
    pub(super) voice: String,
    /// Compute seconds per second of audio, each step counted at its share
    /// of its call.
    pub(super) cost: Ratio,
    /// Audio seconds per character of text.
    pub(super) audio_per_char: Ratio,
    /// What a call of `b` steps costs (used when steps are batched).
    pub(super) calls: CallCost,
    /// Audio seconds one step makes.
    pub(super) step_audio: Ratio,
    /// Recent calls' time over what `calls` predicted for them.
    pub(super) accuracy: Ratio,
    /// Most steps one call runs (`Policy::batch`); 1: no batching.
    pub(super) batch: usize,
    /// Whether the voice's windows grow within a clause
    /// ([`VoiceInfo::windows_grow`](crate::engine::VoiceInfo)).
    pub(super) grows: bool,
    /// Synthesis threads.
    pub(super) threads: usize,
}

impl Estimate {
    /// Compute seconds per second of audio of one of `peers` streams of
    /// this voice. Without batching: what its steps have cost per second
    /// of audio (a batched step counted at its share of its call).
    /// Batched: a step's share of a call of the batch the streams
    /// make when every thread takes its share of them
    /// (`⌈peers / threads⌉`, at most `batch`), over the audio a step makes.
    pub(super) fn cost(&self, peers: usize) -> f64 {
        let per_audio = self.cost.value();
        let step_audio = self.step_audio.value();
        if self.batch <= 1 || self.calls.is_empty() || step_audio <= 0.0 {
            return per_audio;
        }
        let b = peers.div_ceil(self.threads.max(1)).clamp(1, self.batch);
        let fit = self.calls.fit();
        (fit.per_call / b as f64 + fit.per_step) / step_audio
    }

    /// `audio` still to make, `next` of it in the next step (`None`:
    /// unknown, the largest step), for one of `peers` streams of this
    /// voice.
    pub(super) fn demand(&self, audio: f64, next: Option<f64>, peers: usize) -> Demand {
        Demand {
            audio,
            cost: self.cost(peers),
            next,
            grows: self.grows,
        }
    }
}

/// A warm-up measurement.
pub(super) struct Measured {
    pub(super) compute: f64,
    pub(super) audio: f64,
    pub(super) chars: f64,
    /// With batching: the warm-up's sweep of calls.
    pub(super) sweep: Sweep,
}

/// A warm-up sweep of a voice's calls.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    /// Each call, `(steps, seconds)`.
    pub(super) calls: Vec<(usize, f64)>,
    /// Audio seconds the calls made.
    pub(super) audio: f64,
    /// Steps they ran.
    pub(super) steps: f64,
}

impl SynthPool {
    /// Admits a request and starts its pacer, which streams the request's
    /// frames into `out.frames` and says in `out.abort` why it ended early,
    /// if it does (its reader sees that even when the frames queue is
    /// full). Returns at once; the frames follow as steps are synthesised.
    /// The pacer runs in the caller's span (the service's request span),
    /// so its lines carry the request's ids.
    pub fn submit(
        self: &Arc<Self>,
        request: SpeechRequest,
        clauses: Vec<Clause>,
        out: Output,
    ) -> Result<(), SubmitError> {
        let permit = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| SubmitError::Full(self.config.max_requests))?;
        let arrival = Instant::now();
        let policy = &self.config.policy;
        let (queue, frames, failure) =
            queue::channel(queue::capacity(policy.lookahead, policy.send_ahead));
        let job = self.job(&request, clauses, queue, arrival)?;
        let (id, playout) = self.admit(&request, job, arrival)?;
        self.shared.ready.notify_one();
        let sender = Sender {
            pool: Arc::clone(self),
            id,
            delivery: request.delivery,
            playout,
            arrival,
            _permit: permit,
            tx: out.frames,
            abort: Some(out.abort),
            frames,
            failure,
        };
        tokio::spawn(sender.run().in_current_span());
        Ok(())
    }

    /// The request's work, as the scheduler holds it between steps.
    fn job(
        &self,
        request: &SpeechRequest,
        clauses: Vec<Clause>,
        queue: FrameQueue,
        arrival: Instant,
    ) -> Result<Job, SubmitError> {
        let info = self.voices[request.voice].info();
        let resampler = Resampler::new(info.sample_rate, tts_frame::SAMPLE_RATE)
            .map_err(|_| SubmitError::Full(self.config.max_requests))?;
        let chars = clauses.iter().map(|c| c.text.chars().count()).sum();
        Ok(Job {
            voice: request.voice,
            streaming: info.streaming,
            request: Arc::from(request.ids.request_id.as_str()),
            arrival,
            speech: request.speech.clone(),
            clauses: clauses.into(),
            clause: ClauseState::Done,
            clause_chars: 0,
            chars_left: chars,
            audio: Box::new(AudioState {
                resampler,
                framer: Framer::default(),
                gain: info.gain,
                samples: 0,
                fault: self.config.faults.audio().and_then(audio_fault),
            }),
            queue,
            native: 0,
            clause_start: 0,
            words: Vec::new(),
        })
    }

    /// Admits the job unless it asks for more audio than one request may,
    /// or would make admitted streams late; returns its stream and clock.
    fn admit(
        &self,
        request: &SpeechRequest,
        job: Job,
        arrival: Instant,
    ) -> Result<(StreamId, Arc<Playout>), SubmitError> {
        let mut state = self.shared.lock();
        let estimate = &state.estimates[request.voice];
        // Faster speech is less audio for the same text.
        let speed = f64::from(request.speech.prosody.speed.get());
        let audio = job.chars_left as f64 * estimate.audio_per_char.value() / speed;
        let peers = state.streams.peers(request.voice) + 1;
        let demand = estimate.demand(audio, None, peers);
        if demand.audio > self.config.max_audio_secs {
            return Err(SubmitError::TooLong {
                estimate: demand.audio,
                limit: self.config.max_audio_secs,
            });
        }
        // With batching, the newcomer lowers every peer's share of a call.
        state.reprice(request.voice, 1);
        let admitted = state
            .streams
            .admit(arrival, demand, request.delivery, request.voice);
        if admitted.is_err() {
            state.reprice(request.voice, 0);
        }
        let id = admitted.map_err(|r| SubmitError::Overloaded {
            retry_after: r.retry_after,
        })?;
        state.streams.insert(id, job);
        state.publish_load();
        let playout = state.streams.playout(id).unwrap_or_default();
        Ok((id, playout))
    }
}
