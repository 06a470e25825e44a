//! Loading the voices a configuration names and starting the synthesis
//! threads that speak them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use tts_telemetry::faults::{Component, Faults};

use crate::config::{EngineKind, WorkerConfig};
use crate::engine::{self, EspeakVoice, PiperOptions, PiperVoice, Voice};
use crate::error::WorkerError;
use crate::metrics;
use crate::service::Loaded;
use crate::synth::{PoolConfig, SynthPool};
use crate::{ESPEAK_VOICE, FIXED_COST_VOICE};

/// Loads the voices `config` names and starts the synthesis threads.
/// Blocking.
pub(crate) fn load_voices(config: &WorkerConfig) -> Result<Loaded, WorkerError> {
    let started = Instant::now();
    let mut voices: Vec<Arc<dyn Voice>> = Vec::new();
    if let Some(cost) = config.fixed_cost {
        voices.push(Arc::new(engine::FixedCostVoice::new(
            FIXED_COST_VOICE,
            cost,
        )));
    } else if config.engine == EngineKind::Piper {
        voices.extend(piper_voices(config)?);
    }
    let mut languages = Vec::new();
    if config.fixed_cost.is_none() {
        let espeak = EspeakVoice::load(ESPEAK_VOICE, "en-us")?;
        languages = espeak.languages().to_vec();
        voices.push(Arc::new(espeak));
    }
    let pool = SynthPool::start(&voices, pool_config(config))?;
    let took = started.elapsed();
    let names: Vec<&str> = voices.iter().map(|v| v.info().name.as_str()).collect();
    let default_engine = voices[0].info().engine;
    metrics::voices_loaded(default_engine, took);
    for v in &voices {
        metrics::voice_streams(&v.info().name, v.info().streaming);
    }
    info!(voices = ?names, default = names[0], engine = default_engine,
        threads = config.synthesis_threads, load_ms = took.as_millis() as u64, "voices loaded");
    Ok(Loaded {
        voices,
        pool,
        espeak_languages: languages,
    })
}

/// The synthesis pool's settings from the flags.
fn pool_config(config: &WorkerConfig) -> PoolConfig {
    PoolConfig {
        policy: config.policy(),
        max_requests: config.max_requests,
        send_ahead: Duration::from_millis(config.send_ahead_ms),
        stalled_after: Duration::from_secs_f64(config.stalled_reader_secs),
        max_audio_secs: config.max_audio_secs,
        faults: worker_faults(config),
        stalled_thread_after: Duration::from_secs_f64(config.stalled_thread_secs),
    }
}

/// The Piper voices: the default first (a failure to load it stops the
/// worker), then every other voice in the directory (one that fails is
/// left out with a warning, and the others serve).
fn piper_voices(config: &WorkerConfig) -> Result<Vec<Arc<dyn Voice>>, WorkerError> {
    let opts = PiperOptions {
        runtime_library: config.onnxruntime.clone(),
        intra_threads: config.intra_threads,
        scales: config.deterministic.then_some([0.0, 1.0, 0.0]),
        streaming: config.stream_in_clause,
        plan: engine::ChunkPlan {
            context: config.decoder_context,
            max: config.max_window_frames,
            // Batches share a call more often when windows share widths,
            // and constant shapes need few widths.
            uniform: config.decode_batch() > 1 || config.constant_shapes(),
            constant_shapes: if config.constant_shapes() {
                config.decode_batch()
            } else {
                0
            },
            ..engine::ChunkPlan::default()
        },
        wide_threads: config.idle_intra_threads,
        device: config.device,
        cuda_graphs: config.cuda_graphs,
        text_on_cpu: config.text_part_on_cpu,
        half_decoder: config.fp16_decoder,
    };
    let model = config
        .voice_dir
        .join(format!("{}.onnx", config.piper_voice));
    let mut voices: Vec<Arc<dyn Voice>> = vec![Arc::new(PiperVoice::load(
        &config.piper_voice,
        &model,
        &opts,
    )?)];
    for (name, model) in piper_models(&config.voice_dir) {
        if name == config.piper_voice {
            continue;
        }
        match PiperVoice::load(&name, &model, &opts) {
            Ok(voice) => voices.push(Arc::new(voice)),
            Err(e) => {
                metrics::voice_skipped();
                warn!(voice = %name, error = %e, "voice not loaded; the others serve");
            }
        }
    }
    Ok(voices)
}

/// The fault registry the configuration names, or one that never starts
/// a fault.
pub(crate) fn worker_faults(config: &WorkerConfig) -> Arc<Faults> {
    config
        .faults
        .clone()
        .unwrap_or_else(|| Faults::disabled(&[Component::Worker]))
}

/// The Piper voices in `dir`: each `NAME.onnx` with a `NAME.onnx.json`
/// beside it, by name. A directory that cannot be read has none.
fn piper_models(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut models: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .filter(|p| std::path::PathBuf::from(format!("{}.json", p.display())).is_file())
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_owned(), p)))
        .collect();
    models.sort();
    models
}
