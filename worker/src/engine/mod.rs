//! Speech engines. A [`Voice`] is loaded once and shared; each synthesis
//! thread asks it for its own [`Synthesizer`] (ONNX Runtime sessions need
//! exclusive access while they run).

mod chunks;
mod espeak;
mod fixed;
mod half;
mod phonemes;
mod piper;
pub mod split;
mod stream;
mod words;

pub use chunks::{ChunkPlan, Window};
pub use fixed::{FixedCost, FixedCostVoice};
pub use piper::{PiperOptions, PiperSynthesizer, PiperVoice};
pub use stream::{FLOW_CONTEXT, StreamProgress};

use crate::request::Speech;
use crate::text::Clause;

/// A failure to load a voice or synthesise a clause.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file the voice needs is missing or unreadable.
    #[error("{what} not found at {path}: run `scripts/setup.sh` (or pass its path by flag)")]
    Missing {
        /// What is missing: the voice model, its config, the runtime library.
        what: &'static str,
        /// Where it was looked for.
        path: String,
    },
    /// The voice's JSON config could not be read.
    #[error("voice config {path}: {reason}")]
    Config {
        /// The config file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// ONNX Runtime failed to load or run the model.
    #[error("onnx runtime: {0}")]
    Runtime(String),
    /// libespeak-ng failed.
    #[error("espeak-ng: {0}")]
    Espeak(String),
}

/// What a client can learn about a voice (reported by `ListVoices`).
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceInfo {
    /// Name clients pass to select the voice.
    pub name: String,
    /// `piper` or `espeak`.
    pub engine: &'static str,
    /// Language tag, e.g. `en-US`.
    pub language: String,
    /// The engine's output rate before resampling, in Hz.
    pub sample_rate: u32,
    /// Linear gain applied to the engine's output before conversion to s16.
    pub gain: f32,
    /// Whether audio leaves before a whole clause is synthesised.
    pub streaming: bool,
    /// Whether a clause's windows grow from a small first one to the
    /// largest step (so a new stream's audio is due faster than it plays
    /// until they have: the scheduler counts that surge).
    pub windows_grow: bool,
    /// What identifies the voice's model: the same name and revision give
    /// the same audio (the phrase cache keys on it).
    pub revision: String,
    /// Whether it can say where each word is in its audio.
    pub timestamps: bool,
}

/// Where a word lies in its clause's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordSpan {
    /// The word as written, without the punctuation around it.
    pub text: String,
    /// Its first sample, at the voice's rate, from the clause's start.
    pub start: usize,
    /// One past its last sample.
    pub end: usize,
}

/// A loaded voice, shared by all synthesis threads.
pub trait Voice: Send + Sync {
    /// Name, engine, rate.
    fn info(&self) -> &VoiceInfo;
    /// A synthesiser for the calling thread's exclusive use.
    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError>;
}

/// Where one clause's synthesis stands between steps. It holds data only
/// (no runtime sessions), so each step may run on a different thread.
pub enum ClauseState {
    /// Nothing computed yet.
    Pending(Clause),
    /// A streaming voice's clause after its text part: windows remain.
    Streaming(Box<StreamProgress>),
    /// An engine that knows how many samples the clause has: `done` of
    /// them emitted, `left` to go, at most `step` per step.
    Counted {
        /// Samples emitted.
        done: usize,
        /// Samples still to emit.
        left: usize,
        /// Most samples one step emits.
        step: usize,
    },
    /// Every sample has been emitted.
    Done,
}

impl ClauseState {
    /// Whether every sample has been emitted.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Samples (at the voice's rate) a streaming voice's next step emits:
    /// its next window; `None` when the state does not say (a clause not
    /// started, another engine's steps).
    pub fn next_window_samples(&self) -> Option<usize> {
        match self {
            Self::Streaming(p) => Some(p.next_window_frames() * p.hop()),
            Self::Counted { left, step, .. } => Some((*left).min(*step)),
            Self::Pending(_) | Self::Done => None,
        }
    }

    /// Samples (at the voice's rate) still to come, once the text part has
    /// run; `None` before.
    pub fn remaining_samples(&self) -> Option<usize> {
        match self {
            Self::Pending(_) => None,
            Self::Streaming(p) => Some(p.remaining_frames() * p.hop()),
            Self::Counted { left, .. } => Some(*left),
            Self::Done => Some(0),
        }
    }
}

/// Turns clauses into audio, one step at a time. Owned by one thread.
pub trait Synthesizer: Send {
    /// Runs the next step of `state`, spoken as `speech` says, and hands
    /// its samples (at the voice's native rate, full scale ±1.0) to `emit`.
    /// A step is, for a streaming voice, the text part with the first
    /// decoder window, then one window (with the flow block it needs) per
    /// step; for other voices the whole clause. `wide` asks for more
    /// intra-op threads, when the voice has them, because the machine is
    /// otherwise idle.
    fn step(
        &mut self,
        speech: &Speech,
        state: &mut ClauseState,
        wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError>;

    /// Runs the next step of several clauses of this voice together, where
    /// the engine can share work between them (a streaming Piper voice
    /// decodes their windows in as few calls as their widths allow); the
    /// default runs them one after another. Each clause comes with its
    /// request's speech. `emit` gets each clause's samples with its index.
    /// Returns, for each clause, the words placed during its step, or its
    /// failure (which fails no other).
    fn step_many(
        &mut self,
        clauses: &mut [(&Speech, &mut ClauseState)],
        emit: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<Result<Vec<WordSpan>, EngineError>> {
        one_by_one(self, clauses, emit)
    }

    /// The words whose place in the clause became known during the last
    /// step (for clauses that asked for timestamps, on voices that have
    /// them), in order.
    fn take_words(&mut self) -> Vec<WordSpan> {
        Vec::new()
    }

    /// Synthesises a whole clause step by step, stopping early when `emit`
    /// returns false.
    fn synthesize(
        &mut self,
        speech: &Speech,
        clause: &Clause,
        emit: &mut dyn FnMut(&[f32]) -> bool,
    ) -> Result<(), EngineError> {
        let mut state = ClauseState::Pending(clause.clone());
        let mut go = true;
        while go && !state.is_done() {
            self.step(speech, &mut state, false, &mut |s| go = emit(s))?;
        }
        Ok(())
    }
}

/// Runs the next step of each clause in turn (see
/// [`Synthesizer::step_many`]).
pub(crate) fn one_by_one<S: Synthesizer + ?Sized>(
    synth: &mut S,
    clauses: &mut [(&Speech, &mut ClauseState)],
    emit: &mut dyn FnMut(usize, &[f32]),
) -> Vec<Result<Vec<WordSpan>, EngineError>> {
    clauses
        .iter_mut()
        .enumerate()
        .map(|(i, (speech, state))| {
            synth.step(speech, state, false, &mut |s| emit(i, s))?;
            Ok(synth.take_words())
        })
        .collect()
}

/// espeak-ng's own formant voice: light and fast (real-time factor about
/// 0.001), robotic. For small machines and fast pipeline tests.
pub struct EspeakVoice {
    info: VoiceInfo,
    espeak_voice: String,
    languages: Vec<(String, String)>,
}

impl EspeakVoice {
    /// Loads espeak-ng voice `espeak_voice` (e.g. `en-us`) under `name`.
    pub fn load(name: &str, espeak_voice: &str) -> Result<Self, EngineError> {
        let sample_rate = espeak::sample_rate(espeak_voice)?;
        Ok(Self {
            info: VoiceInfo {
                name: name.to_owned(),
                engine: "espeak",
                language: "en-US".into(),
                sample_rate,
                gain: 1.0,
                streaming: false,
                windows_grow: false,
                // espeak-ng's data comes with the system package.
                revision: "espeak-ng".into(),
                timestamps: false,
            },
            espeak_voice: espeak_voice.to_owned(),
            languages: espeak::languages()?,
        })
    }

    /// Every language espeak-ng speaks, with the identifier of the
    /// espeak-ng voice that speaks it (each is also offered as voice
    /// `espeak-<language>`).
    pub fn languages(&self) -> &[(String, String)] {
        &self.languages
    }
}

impl Voice for EspeakVoice {
    fn info(&self) -> &VoiceInfo {
        &self.info
    }

    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError> {
        Ok(Box::new(EspeakSynthesizer {
            voice: self.espeak_voice.clone(),
            scratch: Vec::new(),
        }))
    }
}

struct EspeakSynthesizer {
    voice: String,
    scratch: Vec<i16>,
}

impl Synthesizer for EspeakSynthesizer {
    fn step(
        &mut self,
        speech: &Speech,
        state: &mut ClauseState,
        _wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        let ClauseState::Pending(clause) = std::mem::replace(state, ClauseState::Done) else {
            return Ok(());
        };
        self.scratch.clear();
        espeak::synthesize(
            speech.language.as_deref().unwrap_or(&self.voice),
            &clause.text,
            speech.prosody.speed.get(),
            &mut self.scratch,
        )?;
        let samples: Vec<f32> = self
            .scratch
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect();
        emit(&samples);
        Ok(())
    }
}
