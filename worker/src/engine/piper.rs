//! Piper neural voices (VITS exported to ONNX), run with ONNX Runtime loaded
//! dynamically; phonemes come from espeak-ng.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::{EngineError, Synthesizer, Voice, VoiceInfo, espeak};
use crate::text::Clause;

const PAD: char = '_';
const BOS: char = '^';
const EOS: char = '$';

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
    env: ort::environment::Environment,
}

/// Text → phoneme ids, shared by a voice's synthesis threads.
struct Phonemizer {
    espeak_voice: String,
    ids: HashMap<char, Vec<i64>>,
}

impl Phonemizer {
    /// Phoneme ids for one clause, as the reference Piper implementation
    /// builds them: `^`, then each phoneme (NFD-decomposed) followed by the
    /// pad `_`, the clause's punctuation likewise, then `$`.
    fn ids(&self, clause: &Clause) -> Result<Vec<i64>, EngineError> {
        let mut phonemes = espeak::phonemize(&self.espeak_voice, &clause.text)?;
        if let Some(t) = clause.terminator {
            phonemes.push(t);
        }
        let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
        let pad = &self.ids[&PAD];
        ids.extend_from_slice(&self.ids[&BOS]);
        ids.extend_from_slice(pad);
        for c in phonemes.nfd() {
            // Symbols the voice was not trained on are skipped, as Piper does.
            if let Some(id) = self.ids.get(&c) {
                ids.extend_from_slice(id);
                ids.extend_from_slice(pad);
            }
        }
        ids.extend_from_slice(&self.ids[&EOS]);
        Ok(ids)
    }
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
        let mut ids = HashMap::new();
        for (symbol, id) in config.phoneme_id_map {
            let mut chars = symbol.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, id);
                }
                _ => {
                    return Err(config_error(format!(
                        "phoneme {symbol:?} is not one character"
                    )));
                }
            }
        }
        for required in [PAD, BOS, EOS] {
            if !ids.contains_key(&required) {
                return Err(config_error(format!("phoneme_id_map lacks {required:?}")));
            }
        }
        let inference = &config.inference;
        let voice = Self {
            info: VoiceInfo {
                name: name.to_owned(),
                engine: "piper",
                language: config
                    .language
                    .map_or_else(|| "en-US".into(), |l| l.code.replace('_', "-")),
                sample_rate: config.audio.sample_rate,
                gain: PIPER_GAIN,
                streaming: false,
            },
            model: model.to_owned(),
            phonemizer: Arc::new(Phonemizer {
                espeak_voice: config.espeak.voice,
                ids,
            }),
            scales: opts.scales.unwrap_or([
                inference.noise_scale,
                inference.length_scale,
                inference.noise_w,
            ]),
            intra_threads: opts.intra_threads.max(1),
            env: runtime(&opts.runtime_library)?,
        };
        espeak::sample_rate(&voice.phonemizer.espeak_voice)?;
        Ok(voice)
    }

    /// Phoneme ids for one clause (see [`Phonemizer::ids`]).
    pub fn phoneme_ids(&self, clause: &Clause) -> Result<Vec<i64>, EngineError> {
        self.phonemizer.ids(clause)
    }

    fn session(&self) -> Result<Session, EngineError> {
        let err = |e: ort::Error| EngineError::Runtime(e.to_string());
        Session::builder(&self.env)
            .map_err(err)?
            .with_intra_threads(self.intra_threads)
            .map_err(|e| err(e.into()))?
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.into()))?
            .commit_from_file(&self.model)
            .map_err(err)
    }
}

impl Voice for PiperVoice {
    fn info(&self) -> &VoiceInfo {
        &self.info
    }

    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError> {
        Ok(Box::new(PiperSynthesizer {
            session: self.session()?,
            phonemizer: Arc::clone(&self.phonemizer),
            scales: self.scales,
        }))
    }
}

struct PiperSynthesizer {
    session: Session,
    phonemizer: Arc<Phonemizer>,
    scales: [f32; 3],
}

impl Synthesizer for PiperSynthesizer {
    fn synthesize(&mut self, clause: &Clause, out: &mut Vec<f32>) -> Result<(), EngineError> {
        let ids = self.phonemizer.ids(clause)?;
        let err = |e: ort::Error| EngineError::Runtime(e.to_string());
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let scales = Tensor::from_array(([3usize], self.scales.to_vec())).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
            ])
            .map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        out.extend_from_slice(audio);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice() -> Option<PiperVoice> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = root.join(".cache/voices/en_US-joe-medium.onnx");
        let opts = PiperOptions {
            runtime_library: root.join(".cache/onnxruntime/libonnxruntime.so"),
            intra_threads: 1,
            scales: Some([0.0, 1.0, 0.0]),
        };
        match PiperVoice::load("joe", &model, &opts) {
            Ok(v) => Some(v),
            Err(e) => panic!("the Piper voice is required for these tests ({e})"),
        }
    }

    fn clause(text: &str) -> Clause {
        Clause {
            text: text.into(),
            terminator: text.chars().last().filter(|c| ".,;:!?".contains(*c)),
        }
    }

    #[test]
    fn phoneme_ids_match_the_reference_implementation() {
        let Some(v) = voice() else { return };
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
    fn synthesizes_deterministic_speech() {
        let Some(v) = voice() else { return };
        let mut synth = v.synthesizer().expect("session");
        let mut a = Vec::new();
        synth
            .synthesize(&clause("Hello there, world."), &mut a)
            .expect("synthesis");
        let seconds = a.len() as f32 / v.info().sample_rate as f32;
        assert!((0.6..3.0).contains(&seconds), "{seconds} s");
        let peak = a.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05 && peak < 1.0, "peak {peak}");
        let mut b = Vec::new();
        synth
            .synthesize(&clause("Hello there, world."), &mut b)
            .expect("synthesis");
        assert_eq!(a, b, "scales [0, 1, 0] are deterministic");
    }

    #[test]
    fn missing_model_names_the_setup_script() {
        let opts = PiperOptions {
            runtime_library: PathBuf::from("/nonexistent/libonnxruntime.so"),
            intra_threads: 1,
            scales: None,
        };
        let err = PiperVoice::load("x", Path::new("/nonexistent/voice.onnx"), &opts)
            .err()
            .expect("missing model");
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
    }
}
