//! A voice for scheduling tests: every step takes a fixed time and yields a
//! fixed amount of a tone, so a worker's capacity is known exactly on any
//! machine. Not speech; selected only through
//! [`WorkerConfig::fixed_cost`](crate::WorkerConfig::fixed_cost).

use std::time::Duration;

use super::{ClauseState, EngineError, Synthesizer, Voice, VoiceInfo};
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
}

/// Output rate of the voice, in Hz (no resampling).
const RATE: u32 = 48_000;

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
        Ok(Box::new(FixedCostSynthesizer {
            cost: self.cost,
            buffer: Vec::new(),
        }))
    }
}

struct FixedCostSynthesizer {
    cost: FixedCost,
    buffer: Vec<f32>,
}

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(RATE)).round() as usize
}

impl Synthesizer for FixedCostSynthesizer {
    fn step(
        &mut self,
        _speech: &Speech,
        state: &mut ClauseState,
        _wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        let (done, left) = match std::mem::replace(state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let chars = clause.text.chars().count() as u32;
                (0, samples(self.cost.audio_per_char * chars))
            }
            ClauseState::Counted { done, left } => (done, left),
            ClauseState::Streaming(_) | ClauseState::Done => return Ok(()),
        };
        std::thread::sleep(self.cost.step_time);
        let n = left.min(samples(self.cost.step_audio).max(1));
        // A 220 Hz tone at a third of full scale, continuous across steps.
        self.buffer.clear();
        self.buffer.extend(
            (done..done + n)
                .map(|i| (i as f32 * 220.0 * std::f32::consts::TAU / RATE as f32).sin() / 3.0),
        );
        emit(&self.buffer);
        if left > n {
            *state = ClauseState::Counted {
                done: done + n,
                left: left - n,
            };
        }
        Ok(())
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
}
