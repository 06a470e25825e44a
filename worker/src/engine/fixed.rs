//! A voice for scheduling tests: every step takes a fixed time and yields a
//! fixed amount of a tone, so a worker's capacity is known exactly on any
//! machine. Steps of several streams run together as a GPU runs a batch:
//! one call costs the step time plus a marginal time per extra window.
//! Not speech; selected only through
//! [`WorkerConfig::fixed_cost`](crate::WorkerConfig::fixed_cost).

use std::time::Duration;

use super::{ClauseState, EngineError, Synthesizer, Voice, VoiceInfo, WordSpan};
use crate::request::Speech;

/// The voice's costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedCost {
    /// Audio produced by one step.
    pub step_audio: Duration,
    /// Time one step holds its thread (slept, so it does not depend on the
    /// machine's speed or load).
    pub step_time: Duration,
    /// Audio per character of text.
    pub audio_per_char: Duration,
    /// Time each further step adds to a call that runs several together
    /// (a batch of `b` steps holds its thread `step_time + (b − 1) ×
    /// marginal`).
    pub marginal: Duration,
}

impl FixedCost {
    /// What one call running `batch` steps together costs.
    pub fn call(&self, batch: usize) -> Duration {
        self.step_time + self.marginal * batch.saturating_sub(1) as u32
    }
}

/// Output rate of the voice, in Hz (no resampling).
const RATE: u32 = 48_000;

/// The tone: 220 Hz at a third of full scale.
const TONE_HZ: f32 = 220.0;

/// The fixed-cost voice.
pub struct FixedCostVoice {
    info: VoiceInfo,
    cost: FixedCost,
}

impl FixedCostVoice {
    /// A voice named `name` with these costs.
    pub fn new(name: &str, cost: FixedCost) -> Self {
        Self {
            info: VoiceInfo {
                name: name.to_owned(),
                engine: "fixed",
                language: "und".into(),
                sample_rate: RATE,
                gain: 1.0,
                streaming: true,
                windows_grow: false,
                revision: format!("{cost:?}"),
                timestamps: false,
            },
            cost,
        }
    }
}

impl Voice for FixedCostVoice {
    fn info(&self) -> &VoiceInfo {
        &self.info
    }

    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError> {
        // One second of the tone (a whole number of its periods), so that a
        // step copies its samples instead of computing them: the step's
        // time is the voice's cost, not the machine's.
        let tone = (0..RATE)
            .map(|i| (i as f32 * TONE_HZ * std::f32::consts::TAU / RATE as f32).sin() / 3.0)
            .collect();
        Ok(Box::new(FixedCostSynthesizer {
            cost: self.cost,
            tone,
            buffer: Vec::new(),
        }))
    }
}

struct FixedCostSynthesizer {
    cost: FixedCost,
    tone: Vec<f32>,
    buffer: Vec<f32>,
}

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(RATE)).round() as usize
}

impl FixedCostSynthesizer {
    /// Advances `state` by one step without the step's time; returns the
    /// samples it makes, or `None` when it has none left.
    fn advance(&mut self, state: &mut ClauseState) -> Option<&[f32]> {
        let step = samples(self.cost.step_audio).max(1);
        let (done, left) = match std::mem::replace(state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let chars = clause.text.chars().count() as u32;
                (0, samples(self.cost.audio_per_char * chars))
            }
            ClauseState::Counted { done, left, .. } => (done, left),
            ClauseState::Streaming(_) | ClauseState::Done => return None,
        };
        let n = left.min(step);
        // The tone, continuous across steps.
        self.buffer.clear();
        let period = self.tone.len();
        let mut at = done % period;
        while self.buffer.len() < n {
            let take = (n - self.buffer.len()).min(period - at);
            self.buffer.extend_from_slice(&self.tone[at..at + take]);
            at = 0;
        }
        if left > n {
            *state = ClauseState::Counted {
                done: done + n,
                left: left - n,
                step,
            };
        }
        Some(&self.buffer)
    }
}

impl Synthesizer for FixedCostSynthesizer {
    fn step(
        &mut self,
        _speech: &Speech,
        state: &mut ClauseState,
        _wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        if matches!(state, ClauseState::Pending(_) | ClauseState::Counted { .. }) {
            std::thread::sleep(self.cost.call(1));
        }
        if let Some(samples) = self.advance(state) {
            emit(samples);
        }
        Ok(())
    }

    /// One call for all of them: the step time once, plus the marginal
    /// time for each further step.
    fn step_many(
        &mut self,
        clauses: &mut [(&Speech, &mut ClauseState)],
        emit: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<Result<Vec<WordSpan>, EngineError>> {
        let live = clauses
            .iter()
            .filter(|(_, s)| matches!(s, ClauseState::Pending(_) | ClauseState::Counted { .. }))
            .count();
        if live > 0 {
            std::thread::sleep(self.cost.call(live));
        }
        clauses
            .iter_mut()
            .enumerate()
            .map(|(i, (_, state))| {
                if let Some(samples) = self.advance(state) {
                    emit(i, samples);
                }
                Ok(Vec::new())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Clause;

    #[test]
    fn steps_take_the_fixed_time_and_yield_the_fixed_audio() {
        let voice = FixedCostVoice::new(
            "fixed",
            FixedCost {
                step_audio: Duration::from_millis(100),
                step_time: Duration::from_millis(5),
                audio_per_char: Duration::from_millis(10),
                marginal: Duration::ZERO,
            },
        );
        let mut synth = voice.synthesizer().expect("synthesizer");
        let mut state = ClauseState::Pending(Clause {
            text: "x".repeat(25),
            terminator: None,
        });
        let mut steps = Vec::new();
        while !state.is_done() {
            let started = std::time::Instant::now();
            let mut n = 0;
            synth
                .step(&Speech::default(), &mut state, false, &mut |s| n += s.len())
                .expect("step");
            assert!(started.elapsed() >= Duration::from_millis(5));
            steps.push(n);
        }
        // 250 ms of audio in 100 ms steps.
        assert_eq!(steps, vec![4_800, 4_800, 2_400]);
    }

    #[test]
    fn a_batch_costs_one_step_plus_the_marginal_time_per_extra_step() {
        let cost = FixedCost {
            step_audio: Duration::from_millis(100),
            step_time: Duration::from_millis(20),
            audio_per_char: Duration::from_millis(10),
            marginal: Duration::from_millis(2),
        };
        assert_eq!(cost.call(1), Duration::from_millis(20));
        assert_eq!(cost.call(11), Duration::from_millis(40));
        let mut synth = FixedCostVoice::new("fixed", cost)
            .synthesizer()
            .expect("synthesizer");
        let speech = Speech::default();
        // Ten clauses of 150 ms: a full step each, then half of one.
        let mut states: Vec<ClauseState> = (0..10)
            .map(|_| {
                ClauseState::Pending(Clause {
                    text: "x".repeat(15),
                    terminator: None,
                })
            })
            .collect();
        let mut clauses: Vec<(&Speech, &mut ClauseState)> =
            states.iter_mut().map(|s| (&speech, s)).collect();
        let mut got = [0usize; 10];
        let started = std::time::Instant::now();
        let results = synth.step_many(&mut clauses, &mut |i, s| got[i] += s.len());
        let took = started.elapsed();
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(got, [4_800; 10], "a full step each");
        // One call: 20 ms + 9 × 2 ms, not ten steps' 200 ms.
        assert!(took >= Duration::from_millis(38), "{took:?}");
        synth.step_many(&mut clauses, &mut |i, s| got[i] += s.len());
        assert_eq!(got, [7_200; 10]);
        assert!(clauses.iter().all(|(_, s)| s.is_done()));
    }
}
