//! Piper neural voices (VITS exported to ONNX), run with ONNX Runtime loaded
//! dynamically; phonemes come from espeak-ng.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::chunks::ChunkPlan;
use super::phonemes::{Phonemizer, Run};
use super::split::{SplitError, SplitModel, split, with_durations};
use super::stream::{StreamProgress, StreamedSessions};
use super::{ClauseState, EngineError, Synthesizer, Voice, VoiceInfo, WordSpan, espeak};
use crate::text::Clause;

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
}

#[derive(Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    language: Option<LanguageConfig>,
}

#[derive(Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

#[derive(Deserialize)]
struct LanguageConfig {
    code: String,
}

/// A loaded Piper voice: its config, and the model path each synthesis
/// thread opens its own session on.
pub struct PiperVoice {
    info: VoiceInfo,
    model: PathBuf,
    phonemizer: Arc<Phonemizer>,
    scales: [f32; 3],
    intra_threads: usize,
    device: crate::gpu::Device,
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

/// ONNX Runtime can be loaded once per process; every voice shares it.
static RUNTIME: OnceLock<Mutex<Option<(PathBuf, ort::environment::Environment)>>> = OnceLock::new();

fn runtime(library: &Path) -> Result<ort::environment::Environment, EngineError> {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, env)) = guard.as_ref() {
        return Ok(env.clone());
    }
    if !library.is_file() {
        return Err(EngineError::Missing {
            what: "ONNX Runtime library",
            path: library.display().to_string(),
        });
    }
    let env = ort::init_from(library)
        .map_err(|e| EngineError::Runtime(format!("loading {}: {e}", library.display())))?
        .with_name("tts-worker")
        .build()
        .map_err(|e| EngineError::Runtime(e.to_string()))?;
    *guard = Some((library.to_owned(), env.clone()));
    Ok(env)
}

impl PiperVoice {
    /// Loads `model` (an `.onnx` file) and its `.onnx.json` config beside it.
    pub fn load(name: &str, model: &Path, opts: &PiperOptions) -> Result<Self, EngineError> {
        let config_path = PathBuf::from(format!("{}.json", model.display()));
        for (what, path) in [("voice model", model), ("voice config", &config_path)] {
            if !path.is_file() {
                return Err(EngineError::Missing {
                    what,
                    path: path.display().to_string(),
                });
            }
        }
        let config_error = |reason: String| EngineError::Config {
            path: config_path.display().to_string(),
            reason,
        };
        let raw = std::fs::read(&config_path).map_err(|e| config_error(e.to_string()))?;
        let config: VoiceConfig =
            serde_json::from_slice(&raw).map_err(|e| config_error(e.to_string()))?;
        let phonemizer =
            Phonemizer::new(config.espeak.voice, config.phoneme_id_map).map_err(config_error)?;
        let inference = &config.inference;
        let bytes = std::fs::read(model).map_err(|e| EngineError::Missing {
            what: "voice model",
            path: format!("{}: {e}", model.display()),
        })?;
        let parts = if opts.streaming {
            match split(&bytes) {
                Ok(parts) => Some(Arc::new(parts)),
                // Not a model at all: nothing to fall back to.
                Err(e @ SplitError::Parse(_)) => {
                    return Err(EngineError::Runtime(format!("{}: {e}", model.display())));
                }
                Err(e) => {
                    tracing::warn!(voice = name, error = %e, "voice cannot stream inside a clause; synthesising whole clauses");
                    None
                }
            }
        } else {
            None
        };
        // Whole clauses: the model with its durations as an extra output,
        // when it has them (for word timestamps).
        let timed = match &parts {
            Some(_) => None,
            None => with_durations(&bytes)
                .map_err(|e| EngineError::Runtime(format!("{}: {e}", model.display())))?
                .map(Arc::new),
        };
        let timestamps = match &parts {
            Some(p) => p.durations.is_some(),
            None => timed.is_some(),
        };
        let voice = Self {
            info: VoiceInfo {
                name: name.to_owned(),
                engine: "piper",
                language: config
                    .language
                    .map_or_else(|| "en-US".into(), |l| l.code.replace('_', "-")),
                sample_rate: config.audio.sample_rate,
                gain: PIPER_GAIN,
                streaming: parts.is_some(),
                revision: model_revision(&bytes, &raw),
                timestamps,
            },
            model: model.to_owned(),
            phonemizer: Arc::new(phonemizer),
            scales: opts.scales.unwrap_or([
                inference.noise_scale,
                inference.length_scale,
                inference.noise_w,
            ]),
            intra_threads: opts.intra_threads.max(1),
            device: opts.device,
            env: runtime(&opts.runtime_library)?,
            parts,
            timed,
            plan: opts.plan,
            wide: None,
        };
        espeak::sample_rate(voice.phonemizer.espeak_voice())?;
        let wide = match &voice.parts {
            Some(parts) if opts.wide_threads > 1 => Some(Arc::new(Mutex::new(
                voice.open_sessions(parts, opts.wide_threads)?,
            ))),
            _ => None,
        };
        Ok(Self { wide, ..voice })
    }

    /// Phoneme ids for one clause, as the reference Piper implementation
    /// builds them.
    pub fn phoneme_ids(&self, clause: &Clause) -> Result<Vec<i64>, EngineError> {
        self.phonemizer.ids(clause)
    }

    fn builder(
        &self,
        threads: usize,
    ) -> Result<ort::session::builder::SessionBuilder, EngineError> {
        let err = |e: ort::Error| EngineError::Runtime(e.to_string());
        Session::builder(&self.env)
            .map_err(err)?
            .with_intra_threads(threads)
            .map_err(|e| err(e.into()))?
            // Spinning threads steal the core from the next window's call.
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.into()))?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(|e| err(e.into()))
            .and_then(|b| on_device(b, self.device))
    }

    /// A synthesiser that runs the whole model once per clause.
    pub fn one_shot(&self) -> Result<PiperSynthesizer, EngineError> {
        let mut builder = without_arena(self.builder(self.intra_threads)?)?;
        let session = match &self.timed {
            Some(timed) => builder.commit_from_memory(&timed.0),
            None => builder.commit_from_file(&self.model),
        }
        .map_err(|e| EngineError::Runtime(e.to_string()))?;
        let durations = self.timed.as_ref().map(|t| t.1.clone());
        Ok(self.synthesizer_with(Engine::OneShot(session, durations)))
    }

    /// A synthesiser that streams inside each clause; `None` when the
    /// voice's graph cannot be split.
    pub fn streamed(&self) -> Result<Option<PiperSynthesizer>, EngineError> {
        let Some(parts) = &self.parts else {
            return Ok(None);
        };
        let sessions = self.open_sessions(parts, self.intra_threads)?;
        Ok(Some(
            self.synthesizer_with(Engine::Streamed(Box::new(sessions))),
        ))
    }

    fn open_sessions(
        &self,
        parts: &SplitModel,
        threads: usize,
    ) -> Result<StreamedSessions, EngineError> {
        StreamedSessions::open(parts, self.plan, |bytes, varying| {
            let builder = self.builder(threads)?;
            let mut builder = if varying {
                without_arena(builder)?
            } else {
                builder
            };
            builder
                .commit_from_memory(bytes)
                .map_err(|e| EngineError::Runtime(e.to_string()))
        })
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

/// Registers the CUDA provider for `device` (nothing for the CPU). A
/// provider that cannot be registered is an error, not a silent CPU run.
#[cfg(feature = "cuda")]
fn on_device(
    builder: ort::session::builder::SessionBuilder,
    device: crate::gpu::Device,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    let crate::gpu::Device::Cuda(n) = device else {
        return Ok(builder);
    };
    // Decoder windows and clauses change the input shapes call by call:
    // cuDNN's exhaustive algorithm search would run again for each new one.
    let cuda = ort::ep::CUDA::default()
        .with_device_id(n as i32)
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([cuda])
        .map_err(|e| EngineError::Runtime(format!("CUDA execution provider: {e}")))
}

/// Without the `cuda` feature only the CPU exists ([`crate::gpu::open`]
/// refuses a GPU before any voice loads).
#[cfg(not(feature = "cuda"))]
fn on_device(
    builder: ort::session::builder::SessionBuilder,
    device: crate::gpu::Device,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    match device {
        crate::gpu::Device::Cpu => Ok(builder),
        gpu => Err(EngineError::Runtime(
            crate::gpu::GpuError::NotBuilt(gpu).to_string(),
        )),
    }
}

/// The CRC-32C of the model and its configuration, as 8 hex digits each:
/// another export under the same name is another revision.
fn model_revision(model: &[u8], config: &[u8]) -> String {
    format!(
        "{:08x}-{:08x}",
        tts_frame::checksum(model),
        tts_frame::checksum(config)
    )
}

/// A session whose input size varies with the text allocates afresh for
/// each run instead of keeping an arena (and a memory pattern) sized by
/// the largest input it ever saw.
fn without_arena(
    builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    let err = |e: ort::Error| EngineError::Runtime(e.to_string());
    builder
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(|e| err(e.into()))?
        .with_memory_pattern(false)
        .map_err(|e| err(e.into()))
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
        states: &mut [&mut ClauseState],
        emit: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<Result<Vec<WordSpan>, EngineError>> {
        match &mut self.engine {
            Engine::Streamed(sessions) => {
                step_streamed(sessions, &self.phonemizer, self.scales, states, emit)
            }
            Engine::OneShot(..) => super::one_by_one(self, states, emit),
        }
    }

    fn step(
        &mut self,
        state: &mut ClauseState,
        wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        let (session, durations) = match &mut self.engine {
            Engine::Streamed(own) => {
                // A clause's first step takes the shared wide sessions when
                // asked for and free.
                let first = matches!(state, ClauseState::Pending(_));
                let mut shared = (wide && first)
                    .then_some(self.wide.as_ref())
                    .flatten()
                    .and_then(|m| m.try_lock().ok());
                let sessions = shared.as_deref_mut().unwrap_or(own);
                let mut one = [state];
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
                return Ok(());
            }
            Engine::OneShot(session, durations) => (session, durations),
        };
        match std::mem::replace(state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let runs = self.phonemizer.id_runs(&clause)?;
                let scales = clause.prosody.scales(self.scales);
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
/// sessions: each clause's text part (for a new one) and flow block run on
/// their own, then their decoder windows together. What
/// [`Synthesizer::step_many`] returns.
fn step_streamed(
    sessions: &mut StreamedSessions,
    phonemizer: &Phonemizer,
    default_scales: [f32; 3],
    states: &mut [&mut ClauseState],
    emit: &mut dyn FnMut(usize, &[f32]),
) -> Vec<Result<Vec<WordSpan>, EngineError>> {
    let mut results: Vec<Result<Vec<WordSpan>, EngineError>> = Vec::new();
    let mut streams: Vec<(usize, Box<StreamProgress>)> = Vec::new();
    for (i, state) in states.iter_mut().enumerate() {
        results.push(Ok(Vec::new()));
        let progress = match std::mem::replace(&mut **state, ClauseState::Done) {
            ClauseState::Pending(clause) => {
                let scales = clause.prosody.scales(default_scales);
                phonemizer
                    .id_runs(&clause)
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
                *states[i] = more(remaining, *progress);
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
mod tests {
    use super::*;
    use crate::engine::phonemes::{BOS, EOS, MAX_IDS};

    enum PlanChoice {
        Default,
        /// One window over the whole clause, no context: the three parts in
        /// plain sequence.
        Whole,
        /// No streaming: whole clauses through the whole model.
        NoStreaming,
        /// The default windows, widened to the standard widths.
        Uniform,
    }

    fn voice(plan: PlanChoice) -> PiperVoice {
        let streaming = !matches!(plan, PlanChoice::NoStreaming);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = root.join(".cache/voices/en_US-joe-medium.onnx");
        let plan = match plan {
            PlanChoice::Default | PlanChoice::NoStreaming => ChunkPlan::default(),
            PlanChoice::Uniform => ChunkPlan {
                uniform: true,
                ..ChunkPlan::default()
            },
            PlanChoice::Whole => ChunkPlan {
                first: usize::MAX / 4,
                max: usize::MAX / 4,
                context: 0,
                uniform: false,
            },
        };
        let opts = PiperOptions {
            runtime_library: root.join(".cache/onnxruntime/libonnxruntime.so"),
            intra_threads: 1,
            scales: Some([0.0, 1.0, 0.0]),
            streaming,
            plan,
            wide_threads: 0,
            device: crate::gpu::Device::Cpu,
        };
        PiperVoice::load("joe", &model, &opts)
            .unwrap_or_else(|e| panic!("the Piper voice is required (run scripts/setup.sh): {e}"))
    }

    fn clause(text: &str) -> Clause {
        Clause {
            text: text.into(),
            terminator: text.chars().last().filter(|c| ".,;:!?".contains(*c)),
            ..Clause::default()
        }
    }

    /// The samples of one clause, and how many pieces they came in.
    fn speak(synth: &mut PiperSynthesizer, text: &str) -> (Vec<f32>, usize) {
        let (mut out, mut pieces) = (Vec::new(), 0);
        synth
            .synthesize(&clause(text), &mut |s: &[f32]| {
                out.extend_from_slice(s);
                pieces += 1;
                true
            })
            .expect("synthesis");
        (out, pieces)
    }

    /// The samples of one clause spoken with timestamps, and its words.
    fn speak_timed(synth: &mut PiperSynthesizer, text: &str) -> (Vec<f32>, Vec<WordSpan>) {
        let mut out = Vec::new();
        let timed = Clause {
            timestamps: true,
            ..clause(text)
        };
        synth
            .synthesize(&timed, &mut |s: &[f32]| {
                out.extend_from_slice(s);
                true
            })
            .expect("synthesis");
        (out, synth.take_words())
    }

    #[test]
    fn words_are_placed_alike_streamed_or_whole_and_each_holds_speech() {
        let text = "The quick brown fox jumps over the lazy dog, and 123 of the others.";
        let streaming = voice(PlanChoice::Default);
        let whole = voice(PlanChoice::NoStreaming);
        assert!(streaming.info().timestamps && whole.info().timestamps);
        let (audio, words) = speak_timed(&mut streaming.streamed().expect("s").expect("s"), text);
        let (audio_whole, words_whole) = speak_timed(&mut whole.one_shot().expect("s"), text);
        let names: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            names,
            [
                "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and",
                "123", "of", "the", "others"
            ]
        );
        assert_eq!(words, words_whole, "the same durations either way");
        assert_eq!(audio.len(), audio_whole.len());
        let level = |s: &[f32]| s.iter().map(|x| x.abs()).sum::<f32>() / s.len().max(1) as f32;
        for pair in words.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{pair:?}");
        }
        for w in &words {
            assert!(
                w.start < w.end && w.end <= audio.len(),
                "{w:?} in {} samples",
                audio.len()
            );
        }
        // Speech lies inside the words, silence between them: the words'
        // samples are much louder than the rest.
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        let mut at = 0;
        for w in &words {
            outside.extend_from_slice(&audio[at..w.start]);
            inside.extend_from_slice(&audio[w.start..w.end]);
            at = w.end;
        }
        outside.extend_from_slice(&audio[at..]);
        let (inside, outside) = (level(&inside), level(&outside));
        assert!(
            inside > 2.5 * outside,
            "inside words {inside}, outside {outside}"
        );
        let whole_level = level(&audio);
        let loud = words
            .iter()
            .filter(|w| level(&audio[w.start..w.end]) > whole_level * 0.5)
            .count();
        assert!(
            loud >= words.len() - 2,
            "{loud} of {} words hold speech",
            words.len()
        );
        // Without timestamps, nothing is placed.
        let mut synth = streaming.streamed().expect("s").expect("s");
        speak(&mut synth, text);
        assert!(synth.take_words().is_empty());
    }

    const SENTENCES: [&str; 4] = [
        "Hello there.",
        "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
        "Streaming speech has to start quickly, keep a steady pace, and never stall, even when \
         the sentence is long, full of commas, and the machine is busy with many other listeners \
         who are all waiting for their own first words to arrive.",
        "Yes!",
    ];

    #[test]
    fn phoneme_ids_match_the_reference_implementation() {
        let v = voice(PlanChoice::Default);
        let s1: Vec<i64> = vec![
            1, 0, 41, 0, 59, 0, 3, 0, 23, 0, 35, 0, 120, 0, 74, 0, 23, 0, 3, 0, 15, 0, 88, 0, 120,
            0, 14, 0, 100, 0, 26, 0, 3, 0, 19, 0, 120, 0, 51, 0, 122, 0, 23, 0, 31, 0, 3, 0, 17, 0,
            108, 0, 120, 0, 102, 0, 25, 0, 28, 0, 31, 0, 3, 0, 121, 0, 27, 0, 100, 0, 34, 0, 60, 0,
            3, 0, 41, 0, 59, 0, 3, 0, 24, 0, 120, 0, 18, 0, 74, 0, 38, 0, 21, 0, 3, 0, 17, 0, 120,
            0, 51, 0, 122, 0, 66, 0, 10, 0, 2,
        ];
        let s2: Vec<i64> = vec![
            1, 0, 41, 0, 74, 0, 31, 0, 3, 0, 74, 0, 38, 0, 3, 0, 50, 0, 3, 0, 31, 0, 32, 0, 88, 0,
            120, 0, 21, 0, 122, 0, 25, 0, 74, 0, 44, 0, 3, 0, 31, 0, 28, 0, 120, 0, 21, 0, 122, 0,
            32, 0, 96, 0, 3, 0, 32, 0, 120, 0, 61, 0, 31, 0, 32, 0, 10, 0, 2,
        ];
        let got1 = v
            .phoneme_ids(&clause("The quick brown fox jumps over the lazy dog."))
            .expect("ids");
        assert_eq!(got1, s1);
        let got2 = v
            .phoneme_ids(&clause("This is a streaming speech test."))
            .expect("ids");
        assert_eq!(got2, s2);
    }

    #[test]
    fn a_clause_too_long_for_one_text_part_run_is_cut_between_words() {
        let v = voice(PlanChoice::Default);
        let normal = clause(&"The quick brown fox jumps over the lazy dog and ".repeat(6));
        let runs = v.phonemizer.id_runs(&normal).expect("ids");
        assert_eq!(runs.len(), 1, "a 300-character clause is one run");
        let digits = clause(&"7".repeat(300));
        let runs = v.phonemizer.id_runs(&digits).expect("ids");
        assert!(runs.len() > 1, "{} runs", runs.len());
        eprintln!(
            "300 digits: runs of {:?} ids",
            runs.iter().map(|r| r.ids.len()).collect::<Vec<_>>()
        );
        let space = v.phonemizer.ids[&' '][0];
        for run in runs.iter().map(|r| &r.ids) {
            assert!(run.len() <= MAX_IDS, "{} ids", run.len());
            assert_eq!(run[0], v.phonemizer.ids[&BOS][0]);
            assert_eq!(run[run.len() - 1], v.phonemizer.ids[&EOS][0]);
            // No run starts inside a word: a word boundary precedes it.
            assert_ne!(run[2], space);
        }
        // Streamed and one-shot both speak every run, the same audio.
        let mut streamed = v.streamed().expect("sessions").expect("streams");
        let mut whole = v.one_shot().expect("session");
        let (a, _) = speak(&mut streamed, &"7".repeat(300));
        let (b, _) = speak(&mut whole, &"7".repeat(300));
        assert!(a.len() > 22_050 * 12, "{} samples", a.len());
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn the_graph_splits_and_the_voice_streams() {
        let v = voice(PlanChoice::Default);
        assert!(v.info().streaming, "the voice should stream");
        assert!(v.streamed().expect("sessions").is_some());
    }

    #[test]
    fn split_parts_compose_to_the_full_model() {
        let v = voice(PlanChoice::Whole);
        let mut whole = v.one_shot().expect("one-shot session");
        let mut parts = v.streamed().expect("sessions").expect("streams");
        for text in SENTENCES {
            let (a, _) = speak(&mut whole, text);
            let (b, pieces) = speak(&mut parts, text);
            assert_eq!(pieces, 1);
            assert_eq!(a.len(), b.len(), "{text}");
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "composed parts, {} samples: max abs difference {worst:e}",
                a.len()
            );
            assert_eq!(
                a, b,
                "{text}: the parts in sequence differ from the whole (max {worst})"
            );
        }
    }

    #[test]
    fn streamed_samples_equal_the_one_shot_samples() {
        let v = voice(PlanChoice::Default);
        let mut whole = v.one_shot().expect("one-shot session");
        let mut streamed = v.streamed().expect("sessions").expect("streams");
        for text in SENTENCES {
            let (a, _) = speak(&mut whole, text);
            let (b, pieces) = speak(&mut streamed, text);
            assert!(pieces >= 2 || a.len() < 20 * 256, "{text}: {pieces} pieces");
            assert_eq!(a.len(), b.len(), "{text}");
            let (worst, at) = a
                .iter()
                .zip(&b)
                .enumerate()
                .map(|(i, (x, y))| ((x - y).abs(), i))
                .fold((0f32, 0), |m, d| if d.0 > m.0 { d } else { m });
            eprintln!(
                "streamed in {pieces} pieces, {} samples: max abs difference {worst:e}",
                a.len()
            );
            assert!(
                worst <= 1e-4,
                "{text}: max abs difference {worst} at sample {at}"
            );
        }
    }

    #[test]
    fn clauses_stepped_together_sound_as_they_do_alone() {
        let alone = voice(PlanChoice::Default);
        let mut solo = alone.streamed().expect("sessions").expect("streams");
        let together = voice(PlanChoice::Uniform);
        let mut batch = together.streamed().expect("sessions").expect("streams");
        // Each clause's first steps start one step apart, so that windows of
        // every width meet windows of other widths.
        // The second clause also asks for word timestamps.
        let timed = 1;
        let mut states: Vec<ClauseState> = Vec::new();
        let mut audio: Vec<Vec<f32>> = vec![Vec::new(); SENTENCES.len()];
        let mut words: Vec<WordSpan> = Vec::new();
        let mut steps = 0;
        while states.len() < SENTENCES.len() || states.iter().any(|s| !s.is_done()) {
            if let Some(text) = SENTENCES.get(states.len()) {
                let timestamps = states.len() == timed;
                states.push(ClauseState::Pending(Clause {
                    timestamps,
                    ..clause(text)
                }));
            }
            let mut active: Vec<(usize, &mut ClauseState)> = states
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.is_done())
                .collect();
            let index: Vec<usize> = active.iter().map(|(i, _)| *i).collect();
            let mut refs: Vec<&mut ClauseState> =
                active.iter_mut().map(|(_, s)| &mut **s).collect();
            let results = batch.step_many(&mut refs, &mut |k, s| {
                audio[index[k]].extend_from_slice(s);
            });
            for (k, r) in results.into_iter().enumerate() {
                let placed = r.expect("each clause steps");
                assert!(
                    placed.is_empty() || index[k] == timed,
                    "words only where asked"
                );
                words.extend(placed);
            }
            steps += 1;
        }
        let Engine::Streamed(sessions) = &batch.engine else {
            panic!("a streaming synthesiser");
        };
        let calls = sessions.decoder_calls();
        let mut windows = 0;
        for (text, got) in SENTENCES.iter().zip(&audio) {
            let before = match &solo.engine {
                Engine::Streamed(s) => s.decoder_calls(),
                Engine::OneShot(..) => 0,
            };
            let (want, _) = speak(&mut solo, text);
            if let Engine::Streamed(s) = &solo.engine {
                windows += s.decoder_calls() - before;
            }
            assert_eq!(want.len(), got.len(), "{text}");
            let worst = want
                .iter()
                .zip(got)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            eprintln!("{} samples: max abs difference {worst:e}", got.len());
            assert!(worst <= 1e-4, "{text}: max abs difference {worst}");
        }
        let (_, alone_words) = speak_timed(&mut solo, SENTENCES[timed]);
        assert!(!words.is_empty());
        assert_eq!(words, alone_words, "words are placed alike batched or not");
        eprintln!("{windows} windows in {calls} decoder calls over {steps} steps");
        assert!(
            calls < windows,
            "{windows} windows should share calls, took {calls}"
        );
    }

    #[test]
    fn streamed_frames_match_one_shot_frames_across_window_edges() {
        use crate::audio::{Framer, Resampler, to_s16};
        let v = voice(PlanChoice::Default);
        let frames = |synth: &mut PiperSynthesizer, text: &str| {
            let mut resampler =
                Resampler::new(v.info().sample_rate, tts_frame::SAMPLE_RATE).expect("resampler");
            let (mut framer, mut frames, mut out) = (Framer::default(), Vec::new(), Vec::new());
            synth
                .synthesize(&clause(text), &mut |s: &[f32]| {
                    out.clear();
                    resampler.process(s, &mut out);
                    framer.push(out.iter().map(|&x| to_s16(x, PIPER_GAIN)), &mut frames);
                    true
                })
                .expect("synthesis");
            out.clear();
            resampler.finish(&mut out);
            framer.push(out.iter().map(|&x| to_s16(x, PIPER_GAIN)), &mut frames);
            frames.extend(framer.finish());
            frames
        };
        let mut whole = v.one_shot().expect("one-shot session");
        let mut streamed = v.streamed().expect("sessions").expect("streams");
        let text = SENTENCES[2];
        let (a, b) = (frames(&mut whole, text), frames(&mut streamed, text));
        assert_eq!(a.len(), b.len());
        for (fa, fb) in a.iter().zip(&b) {
            assert_eq!(
                (fa.sequence, fa.samples, fa.last),
                (fb.sequence, fb.samples, fb.last)
            );
            let worst = tts_frame::bytes_to_samples(&fa.payload)
                .zip(tts_frame::bytes_to_samples(&fb.payload))
                .map(|(x, y)| (i32::from(x) - i32::from(y)).abs())
                .max()
                .unwrap_or(0);
            assert!(
                worst <= 2,
                "frame {}: samples differ by {worst} LSB",
                fa.sequence
            );
        }
    }

    #[test]
    fn a_graph_without_the_structure_falls_back_to_one_shot() {
        use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, ValueInfoProto};
        let dir = std::env::temp_dir().join(format!("tts-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut node = NodeProto::new();
        node.op_type = "Identity".into();
        node.input = vec!["scales".into()];
        node.output = vec!["output".into()];
        let mut graph = GraphProto::new();
        graph.node = vec![node];
        let mut input = ValueInfoProto::new();
        input.name = "scales".into();
        graph.input.push(input);
        let mut out = ValueInfoProto::new();
        out.name = "output".into();
        graph.output.push(out);
        let mut model = ModelProto::new();
        model.ir_version = 8;
        model.graph = protobuf::MessageField::some(graph);
        let path = dir.join("plain.onnx");
        std::fs::write(&path, model.write_to_bytes().expect("encode")).expect("write");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::copy(
            root.join(".cache/voices/en_US-joe-medium.onnx.json"),
            dir.join("plain.onnx.json"),
        )
        .expect("config");
        let opts = PiperOptions {
            runtime_library: root.join(".cache/onnxruntime/libonnxruntime.so"),
            intra_threads: 1,
            scales: None,
            streaming: true,
            plan: ChunkPlan::default(),
            wide_threads: 0,
            device: crate::gpu::Device::Cpu,
        };
        let v = PiperVoice::load("plain", &path, &opts).expect("loads");
        assert!(!v.info().streaming);
        assert!(v.streamed().expect("no error").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn synthesizes_deterministic_speech() {
        let v = voice(PlanChoice::Default);
        let mut synth = v.one_shot().expect("session");
        let (a, _) = speak(&mut synth, "Hello there, world.");
        let seconds = a.len() as f32 / v.info().sample_rate as f32;
        assert!((0.6..3.0).contains(&seconds), "{seconds} s");
        let peak = a.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05 && peak < 1.0, "peak {peak}");
        let (b, _) = speak(&mut synth, "Hello there, world.");
        assert_eq!(a, b, "scales [0, 1, 0] are deterministic");
    }

    #[test]
    fn missing_model_names_the_setup_script() {
        let opts = PiperOptions {
            runtime_library: PathBuf::from("/nonexistent/libonnxruntime.so"),
            intra_threads: 1,
            scales: None,
            streaming: true,
            plan: ChunkPlan::default(),
            wide_threads: 0,
            device: crate::gpu::Device::Cpu,
        };
        let err = PiperVoice::load("x", Path::new("/nonexistent/voice.onnx"), &opts)
            .err()
            .expect("missing model");
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
    }
}
