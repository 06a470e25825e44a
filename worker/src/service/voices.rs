//! The voices a worker speaks, once loaded: its own, then every espeak-ng
//! language as a voice of its own name.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::engine::{Voice, VoiceInfo};
use crate::synth::SynthPool;

/// The prefix of the voices that are espeak-ng languages.
const ESPEAK_PREFIX: &str = "espeak-";

/// The voices and the threads that speak them, once loaded. The first
/// voice is the default.
pub(crate) struct Loaded {
    pub(crate) voices: Vec<Arc<dyn Voice>>,
    pub(crate) pool: Arc<SynthPool>,
    /// espeak-ng's languages, offered as voices `espeak-<language>`, with
    /// the identifiers of the espeak-ng voices that speak them.
    pub(crate) espeak_languages: Vec<(String, String)>,
}

impl Loaded {
    /// The voice's index and, for an espeak-ng language, the espeak-ng
    /// voice that speaks it; an empty name is the default voice.
    pub(crate) fn find_voice(&self, name: &str) -> Option<(usize, Option<String>)> {
        if name.is_empty() {
            return Some((0, None));
        }
        if let Some(i) = self.voices.iter().position(|v| v.info().name == name) {
            return Some((i, None));
        }
        let language = name.strip_prefix(ESPEAK_PREFIX)?;
        let espeak = self
            .voices
            .iter()
            .position(|v| v.info().engine == "espeak")?;
        self.espeak_languages
            .iter()
            .find(|(l, _)| l == language)
            .map(|(_, identifier)| (espeak, Some(identifier.clone())))
    }

    /// The default voice's name.
    pub(crate) fn default_voice(&self) -> &str {
        &self.voices[0].info().name
    }

    /// Every voice the worker speaks: its own, then every espeak-ng
    /// language not already among them.
    pub(crate) fn offered(&self) -> Vec<VoiceInfo> {
        let mut voices: Vec<VoiceInfo> = self.voices.iter().map(|v| v.info().clone()).collect();
        let Some(espeak) = self.voices.iter().find(|v| v.info().engine == "espeak") else {
            return voices;
        };
        for (language, _) in &self.espeak_languages {
            let name = format!("{ESPEAK_PREFIX}{language}");
            if voices.iter().any(|v| v.name == name) {
                continue;
            }
            voices.push(VoiceInfo {
                name,
                language: language.clone(),
                streaming: false,
                timestamps: false,
                ..espeak.info().clone()
            });
        }
        voices
    }

    /// The names of [`offered`](Self::offered).
    pub(crate) fn names(&self) -> Vec<String> {
        self.offered().into_iter().map(|v| v.name).collect()
    }
}

/// The voices once loaded, and a signal for whoever waits for them.
pub(crate) struct LoadedVoices {
    loaded: OnceLock<Loaded>,
    /// Whether `loaded` is set; one value, overwritten.
    ready: watch::Sender<bool>,
}

impl LoadedVoices {
    pub(crate) fn new() -> Self {
        Self {
            loaded: OnceLock::new(),
            ready: watch::Sender::new(false),
        }
    }

    /// The voices, once loaded.
    pub(crate) fn get(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// The voices are loaded (a second set is ignored).
    pub(crate) fn set(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
        self.ready.send_replace(true);
    }

    /// Resolves with the voices once they are loaded.
    pub(crate) async fn wait(&self) -> Option<&Loaded> {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = ready.wait_for(|r| *r).await;
        self.loaded.get()
    }
}
