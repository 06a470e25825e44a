//! Loading a Piper voice: its JSON config, its graph (split for streaming
//! inside a clause, or whole with its durations) and the ONNX Runtime
//! session settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use serde::Deserialize;

use super::{PIPER_GAIN, PiperOptions, PiperVoice, Placement};
use crate::engine::half::half_precision;
use crate::engine::phonemes::Phonemizer;
use crate::engine::split::{SplitError, SplitModel, split, with_durations};
use crate::engine::{EngineError, VoiceInfo, espeak};

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

fn config_error(path: &Path, reason: String) -> EngineError {
    EngineError::Config {
        path: path.display().to_string(),
        reason,
    }
}

/// The voice's JSON config, and its bytes (part of the revision).
fn read_config(path: &Path) -> Result<(VoiceConfig, Vec<u8>), EngineError> {
    let raw = std::fs::read(path).map_err(|e| config_error(path, e.to_string()))?;
    let config = serde_json::from_slice(&raw).map_err(|e| config_error(path, e.to_string()))?;
    Ok((config, raw))
}

/// The graph as the voice runs it.
struct Graph {
    /// Its three parts, when it streams inside a clause.
    parts: Option<Arc<SplitModel>>,
    /// When it does not: the model with its durations as a second output,
    /// and that output's name, when it has them.
    timed: Option<Arc<(Vec<u8>, String)>>,
}

impl Graph {
    /// Splits the graph when asked to stream and it can; else looks for
    /// its durations (for word timestamps).
    fn read(name: &str, model: &Path, bytes: &[u8], streaming: bool) -> Result<Self, EngineError> {
        let runtime_error =
            |e: &dyn std::fmt::Display| EngineError::Runtime(format!("{}: {e}", model.display()));
        let parts = if streaming {
            match split(bytes) {
                Ok(parts) => Some(Arc::new(parts)),
                // Not a model at all: nothing to fall back to.
                Err(e @ SplitError::Parse(_)) => return Err(runtime_error(&e)),
                Err(e) => {
                    tracing::warn!(voice = name, error = %e, "voice cannot stream inside a clause; synthesising whole clauses");
                    None
                }
            }
        } else {
            None
        };
        let timed = match &parts {
            Some(_) => None,
            None => with_durations(bytes)
                .map_err(|e| runtime_error(&e))?
                .map(Arc::new),
        };
        Ok(Self { parts, timed })
    }

    /// Whether the voice can place words.
    fn timestamps(&self) -> bool {
        match &self.parts {
            Some(p) => p.durations.is_some(),
            None => self.timed.is_some(),
        }
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
        let (config, raw) = read_config(&config_path)?;
        let phonemizer = Phonemizer::new(config.espeak.voice, config.phoneme_id_map)
            .map_err(|reason| config_error(&config_path, reason))?;
        let bytes = std::fs::read(model).map_err(|e| EngineError::Missing {
            what: "voice model",
            path: format!("{}: {e}", model.display()),
        })?;
        let mut graph = Graph::read(name, model, &bytes, opts.streaming)?;
        let mut revision = model_revision(&bytes, &raw);
        if let Some(parts) = graph.parts.as_mut().filter(|_| opts.half_decoder) {
            let half = half_precision(&parts.decoder)
                .map_err(|e| EngineError::Runtime(format!("{}: {e}", model.display())))?;
            Arc::make_mut(parts).decoder = half;
            // Its samples differ from the FP32 decoder's: cached audio
            // of one is not the other's.
            revision.push_str("-fp16");
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
                streaming: graph.parts.is_some(),
                windows_grow: graph.parts.is_some() && opts.plan.first < opts.plan.max,
                revision,
                timestamps: graph.timestamps(),
            },
            model: model.to_owned(),
            phonemizer: Arc::new(phonemizer),
            scales: opts.scales.unwrap_or([
                inference.noise_scale,
                inference.length_scale,
                inference.noise_w,
            ]),
            intra_threads: opts.intra_threads.max(1),
            placement: Placement {
                device: opts.device,
                graphs: opts.cuda_graphs,
                text_on_cpu: opts.text_on_cpu,
            },
            env: runtime(&opts.runtime_library)?,
            parts: graph.parts,
            timed: graph.timed,
            plan: opts.plan,
            wide: None,
        };
        espeak::sample_rate(voice.phonemizer.espeak_voice())?;
        let wide = match &voice.parts {
            Some(parts) if opts.wide_threads > 1 => Some(Arc::new(Mutex::new(
                // Every synthesis thread runs these: a CUDA graph is
                // the capturing thread's.
                voice.open_sessions(parts, opts.wide_threads, voice.placement.without_graphs())?,
            ))),
            _ => None,
        };
        Ok(Self { wide, ..voice })
    }

    pub(super) fn builder(
        &self,
        threads: usize,
    ) -> Result<ort::session::builder::SessionBuilder, EngineError> {
        builder(&self.env, self.placement.device, threads, false)
    }
}

/// A session builder on `env` for `device` with `threads` intra-op
/// threads; with `graph`, on a GPU, capturing a CUDA graph.
pub(super) fn builder(
    env: &ort::environment::Environment,
    device: crate::gpu::Device,
    threads: usize,
    graph: bool,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    let err = |e: ort::Error| EngineError::Runtime(e.to_string());
    Session::builder(env)
        .map_err(err)?
        .with_intra_threads(threads)
        .map_err(|e| err(e.into()))?
        // Spinning threads steal the core from the next window's call.
        .with_intra_op_spinning(false)
        .map_err(|e| err(e.into()))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| err(e.into()))
        .and_then(|b| on_device(b, device, graph))
}

/// Registers the CUDA provider for `device` (nothing for the CPU). A
/// provider that cannot be registered is an error, not a silent CPU run.
#[cfg(feature = "cuda")]
fn on_device(
    builder: ort::session::builder::SessionBuilder,
    device: crate::gpu::Device,
    graph: bool,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    let crate::gpu::Device::Cuda(n) = device else {
        return Ok(builder);
    };
    // Decoder windows and clauses change the input shapes call by call:
    // cuDNN's exhaustive algorithm search would run again for each new
    // one. TF32 matrix and convolution arithmetic on Ampere and later (a
    // 10-bit mantissa inside, FP32 outside), asked for rather than left
    // to the provider's default.
    let cuda = ort::ep::CUDA::default()
        .with_device_id(n as i32)
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        .with_tf32(true)
        .with_cuda_graph(graph)
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
    _graph: bool,
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
pub(super) fn without_arena(
    builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, EngineError> {
    let err = |e: ort::Error| EngineError::Runtime(e.to_string());
    builder
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(|e| err(e.into()))?
        .with_memory_pattern(false)
        .map_err(|e| err(e.into()))
}
