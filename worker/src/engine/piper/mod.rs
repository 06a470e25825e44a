//! Piper neural voices (VITS exported to ONNX), run with ONNX Runtime loaded
//! dynamically; phonemes come from espeak-ng.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::Tensor;

use super::chunks::ChunkPlan;
use super::phonemes::{Phonemizer, Run};
use super::split::SplitModel;
use super::stream::{Placement, Sees, StreamProgress, StreamedSessions, shared_turn};
use super::{ClauseState, EngineError, Synthesizer, Voice, VoiceInfo, WordSpan};
use crate::request::Speech;
use crate::text::Clause;

mod load;

use load::without_arena;

/// Output gain applied to Piper's raw output, which peaks near −7 dBFS:
/// +6 dB, followed by a soft limiter so that nothing ever reaches full scale.
const PIPER_GAIN: f32 = 2.0;

/// How to run a Piper voice.
#[derive(Debug, Clone)]
pub struct PiperOptions {
    /// ONNX Runtime's shared library (`libonnxruntime.so`).
    pub runtime_library: PathBuf,
    /// Intra-op threads per synthesis session.
    pub intra_threads: usize,
    /// `[noise_scale, length_scale, noise_w]`; `None` takes the voice's
    /// config. `[0, 1, 0]` makes output deterministic.
    pub scales: Option<[f32; 3]>,
    /// Stream inside a clause when the graph allows it (see [`split`](super::split)).
    pub streaming: bool,
    /// Decoder windows and context, when streaming.
    pub plan: ChunkPlan,
    /// Intra-op threads of one extra set of sessions, shared by every
    /// synthesis thread, that a clause's first step may use when the
    /// machine is otherwise idle (0 or 1: no such set).
    pub wide_threads: usize,
    /// Where the sessions run.
    pub device: crate::gpu::Device,
    /// On a GPU, each session that sees one shape (with constant shapes)
    /// replays a CUDA graph.
    pub cuda_graphs: bool,
    /// On a GPU, the text part runs on the CPU.
    pub text_on_cpu: bool,
    /// The decoder's weights and activations in FP16 (its input and
    /// output stay FP32), when the voice streams.
    pub half_decoder: bool,
}

/// A loaded Piper voice: its config, and the model path each synthesis
/// thread opens its own session on.
pub struct PiperVoice {
    info: VoiceInfo,
    model: PathBuf,
    phonemizer: Arc<Phonemizer>,
    scales: [f32; 3],
    intra_threads: usize,
    placement: Placement,
    env: ort::environment::Environment,
    /// The model's three parts, when it can stream.
    parts: Option<Arc<SplitModel>>,
    /// When it cannot (or is not to): the model with its durations as a
    /// second output, and that output's name, when it has them.
    timed: Option<Arc<(Vec<u8>, String)>>,
    plan: ChunkPlan,
    /// Sessions with more intra-op threads, for first steps on an idle
    /// machine; whoever holds the lock uses them.
    wide: Option<Arc<Mutex<StreamedSessions>>>,
}

impl PiperVoice {
    /// Phoneme ids for one clause, as the reference Piper implementation
    /// builds them.
    pub fn phoneme_ids(&self, clause: &Clause) -> Result<Vec<i64>, EngineError> {
        self.phonemizer.ids(clause)
    }
    /// A synthesiser that runs the whole model once per clause.
    pub fn one_shot(&self) -> Result<PiperSynthesizer, EngineError> {
        // Device work takes turns with CUDA graph captures.
        let _turn = shared_turn();
        let mut builder = without_arena(self.builder(self.intra_threads)?)?;
        let session = match &self.timed {
            Some(timed) => builder.commit_from_memory(&timed.0),
            None => builder.commit_from_file(&self.model),
        }
        .map_err(|e| EngineError::Runtime(e.to_string()))?;
        let durations = self.timed.as_ref().map(|t| t.1.clone());
        Ok(self.synthesizer_with(Engine::OneShot(session, durations)))
    }

    /// A plain session of the decoder part, made as a synthesis thread
    /// makes its own, and the name of its input (latent frames,
    /// `[rows, channels, frames]`); `None` when the voice's graph cannot
    /// be split. For measuring the decoder alone.
    pub fn decoder_session(&self) -> Result<Option<(Session, String)>, EngineError> {
        let Some(parts) = &self.parts else {
            return Ok(None);
        };
        let session = self
            .builder(self.intra_threads)?
            .commit_from_memory(&parts.decoder)
            .map_err(|e| EngineError::Runtime(e.to_string()))?;
        Ok(Some((session, parts.d.clone())))
    }

    /// A synthesiser that streams inside each clause; `None` when the
    /// voice's graph cannot be split.
    pub fn streamed(&self) -> Result<Option<PiperSynthesizer>, EngineError> {
        let Some(parts) = &self.parts else {
            return Ok(None);
        };
        let sessions = self.open_sessions(parts, self.intra_threads, self.placement)?;
        Ok(Some(
            self.synthesizer_with(Engine::Streamed(Box::new(sessions))),
        ))
    }

    /// Sessions of the three parts with `threads` intra-op threads, placed
    /// by `placement`.
    fn open_sessions(
        &self,
        parts: &Arc<SplitModel>,
        threads: usize,
        placement: Placement,
    ) -> Result<StreamedSessions, EngineError> {
        let env = self.env.clone();
        let make = move |bytes: &[u8], sees: Sees| {
            let graph = sees == Sees::OneShape && placement.graphs;
            let text = matches!(sees, Sees::TextOfAnySize | Sees::TextBucket);
            let device = match text && placement.text_on_cpu {
                true => crate::gpu::Device::Cpu,
                false => placement.device,
            };
            let builder = load::builder(&env, device, threads, graph)?;
            let mut builder = match sees {
                Sees::TextOfAnySize => without_arena(builder)?,
                Sees::TextBucket | Sees::AnyShape | Sees::OneShape => builder,
            };
            builder
                .commit_from_memory(bytes)
                .map_err(|e| EngineError::Runtime(e.to_string()))
        };
        StreamedSessions::open(parts, self.plan, Arc::new(make), placement)
    }

    fn synthesizer_with(&self, engine: Engine) -> PiperSynthesizer {
        PiperSynthesizer {
            engine,
            phonemizer: Arc::clone(&self.phonemizer),
            scales: self.scales,
            wide: self.wide.clone(),
            words: Vec::new(),
        }
    }
}

impl Voice for PiperVoice {
    fn info(&self) -> &VoiceInfo {
        &self.info
    }

    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError> {
        match self.streamed()? {
            Some(s) => Ok(Box::new(s)),
            None => Ok(Box::new(self.one_shot()?)),
        }
    }
}

enum Engine {
    /// The whole model, and the name of its durations output when it has one.
    OneShot(Session, Option<String>),
    Streamed(Box<StreamedSessions>),
}

/// Speaks clauses with a Piper voice, one-shot or streaming.
pub struct PiperSynthesizer {
    engine: Engine,
    phonemizer: Arc<Phonemizer>,
    scales: [f32; 3],
    wide: Option<Arc<Mutex<StreamedSessions>>>,
    /// Words placed during the last step.
    words: Vec<WordSpan>,
}

impl Synthesizer for PiperSynthesizer {
    fn take_words(&mut self) -> Vec<WordSpan> {
        std::mem::take(&mut self.words)
    }

    fn step_many(
        &mut self,
        clauses: &mut [(&Speech, &mut ClauseState)],
        emit: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<Result<Vec<WordSpan>, EngineError>> {
        match &mut self.engine {
            Engine::Streamed(sessions) => {
                step_streamed(sessions, &self.phonemizer, self.scales, clauses, emit)
            }
            Engine::OneShot(..) => super::one_by_one(self, clauses, emit),
        }
    }

    fn step(
        &mut self,
        speech: &Speech,
        state: &mut ClauseState,
        wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        let Engine::Streamed(own) = &mut self.engine else {
            return self.step_one_shot(speech, state, emit);
        };
        // A clause's first step takes the shared wide sessions when asked
        // for and free.
        let first = matches!(state, ClauseState::Pending(_));
        let mut shared = (wide && first)
            .then_some(self.wide.as_ref())
            .flatten()
            .and_then(|m| m.try_lock().ok());
        let sessions = shared.as_deref_mut().unwrap_or(own);
        let mut one = [(speech, state)];
        let stepped = step_streamed(
            sessions,
            &self.phonemizer,
            self.scales,
            &mut one,
            &mut |_, s| emit(s),
        );
        for words in stepped {
            self.words.extend(words?);
        }
        Ok(())
    }
}

impl PiperSynthesizer {
    /// A whole clause through the whole model, run by run.
    fn step_one_shot(
        &mut self,
        speech: &Speech,
        state: &mut ClauseState,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        let Engine::OneShot(session, durations) = &mut self.engine else {
            return Err(EngineError::Runtime(
                "a one-shot step reached a streaming synthesiser".into(),
            ));
        };
        match std::mem::replace(state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let runs = self.phonemizer.id_runs(&clause, speech.timestamps)?;
                let scales = speech.prosody.scales(self.scales);
                let mut before = 0;
                for run in runs {
                    before += one_shot(
                        session,
                        durations.as_deref(),
                        run,
                        scales,
                        before,
                        &mut self.words,
                        emit,
                    )?;
                }
                Ok(())
            }
            ClauseState::Streaming(_) => Err(EngineError::Runtime(
                "a streamed clause reached a one-shot synthesiser".into(),
            )),
            ClauseState::Counted { .. } | ClauseState::Done => Ok(()),
        }
    }
}

/// The next step of each of several clauses on one set of streaming
/// sessions: each clause's text part (for a new one, spoken as its speech
/// says) and flow block run on their own, then their decoder windows
/// together. What [`Synthesizer::step_many`] returns.
fn step_streamed(
    sessions: &mut StreamedSessions,
    phonemizer: &Phonemizer,
    default_scales: [f32; 3],
    clauses: &mut [(&Speech, &mut ClauseState)],
    emit: &mut dyn FnMut(usize, &[f32]),
) -> Vec<Result<Vec<WordSpan>, EngineError>> {
    let mut results: Vec<Result<Vec<WordSpan>, EngineError>> = Vec::new();
    let mut streams: Vec<(usize, Box<StreamProgress>)> = Vec::new();
    for (i, (speech, state)) in clauses.iter_mut().enumerate() {
        results.push(Ok(Vec::new()));
        let progress = match std::mem::replace(&mut **state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let scales = speech.prosody.scales(default_scales);
                phonemizer
                    .id_runs(&clause, speech.timestamps)
                    .and_then(|runs| sessions.begin(runs, scales))
                    .map(Box::new)
            }
            ClauseState::Streaming(progress) => Ok(progress),
            other => {
                **state = other;
                continue;
            }
        };
        match progress {
            Ok(p) => streams.push((i, p)),
            Err(e) => results[i] = Err(e),
        }
    }
    let index: Vec<usize> = streams.iter().map(|(i, _)| *i).collect();
    let mut refs: Vec<&mut StreamProgress> = streams.iter_mut().map(|(_, p)| &mut **p).collect();
    let stepped = sessions.step_many(&mut refs, &mut |k, s| emit(index[k], s));
    for ((i, mut progress), result) in streams.into_iter().zip(stepped) {
        match result {
            Ok(remaining) => {
                results[i] = Ok(progress.take_words());
                *clauses[i].1 = more(remaining, *progress);
            }
            Err(e) => results[i] = Err(e),
        }
    }
    results
}

fn more(remaining: bool, progress: StreamProgress) -> ClauseState {
    if remaining {
        ClauseState::Streaming(Box::new(progress))
    } else {
        ClauseState::Done
    }
}

/// Runs the whole model on one run of ids; places its words (when the
/// model has durations and the run has words) `before` samples into the
/// clause. Returns the samples it emitted.
fn one_shot(
    session: &mut Session,
    durations: Option<&str>,
    mut run: Run,
    scales: [f32; 3],
    before: usize,
    words: &mut Vec<WordSpan>,
    emit: &mut dyn FnMut(&[f32]),
) -> Result<usize, EngineError> {
    let err = |e: ort::Error| EngineError::Runtime(e.to_string());
    let ids = std::mem::take(&mut run.ids);
    let n = ids.len();
    let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
    let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
    let scales = Tensor::from_array(([3usize], scales.to_vec())).map_err(err)?;
    let _turn = shared_turn();
    let outputs = session
        .run(ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
        ])
        .map_err(err)?;
    let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    if let Some(name) = durations.filter(|_| !run.words.is_empty()) {
        let (_, d) = outputs[name].try_extract_tensor::<f32>().map_err(err)?;
        let placed = run.word_frames(d, 0);
        let frames = d.iter().map(|&f| f.max(0.0) as usize).sum::<usize>().max(1);
        let hop = audio.len() / frames;
        words.extend(placed.into_iter().map(|(text, start, end)| WordSpan {
            text,
            start: before + start * hop,
            end: before + end * hop,
        }));
    }
    emit(audio);
    Ok(audio.len())
}

#[cfg(test)]
mod tests;
