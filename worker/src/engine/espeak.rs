//! libespeak-ng, declared by hand (a handful of functions; no bindgen).
//!
//! espeak-ng keeps global state and is not thread-safe, so every call goes
//! through one process-wide lock. It serves two purposes: text → IPA
//! phonemes for the Piper voice, and its own formant voice as a light
//! engine. Both are fast (well under a millisecond per clause), so the lock
//! is never held for long.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_short, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

use super::EngineError;

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const CHARS_UTF8: c_int = 1;
const PHONEMES_IPA: c_int = 0x02;
const POS_CHARACTER: c_int = 1;
const EE_OK: c_int = 0;
const ESPEAK_RATE: c_int = 1;
/// espeak-ng's normal rate, words per minute, and the range it accepts.
const RATE_NORMAL: f32 = 175.0;
const RATE_RANGE: (f32, f32) = (80.0, 450.0);

type SynthCallback = extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

/// `espeak_VOICE` from `speak_lib.h`.
#[repr(C)]
struct VoiceSpec {
    name: *const c_char,
    /// Pairs of a priority byte and a NUL-terminated language name, ended
    /// by a priority of 0.
    languages: *const c_char,
    identifier: *const c_char,
    gender: u8,
    age: u8,
    variant: u8,
    xx1: u8,
    score: c_int,
    spare: *mut c_void,
}

#[link(name = "espeak-ng")]
unsafe extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
    fn espeak_SetSynthCallback(callback: SynthCallback);
    fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
    fn espeak_ListVoices(voice_spec: *const VoiceSpec) -> *const *const VoiceSpec;
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
}

/// The initialised library: its output sample rate and the voice last set.
struct Espeak {
    sample_rate: u32,
    voice: String,
}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, String>> = OnceLock::new();

thread_local! {
    /// Samples delivered by the synthesis callback. In synchronous mode the
    /// callback runs on the thread that called `espeak_Synth`.
    static SYNTH_OUT: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

extern "C" fn collect_samples(wav: *mut c_short, count: c_int, _events: *mut c_void) -> c_int {
    if !wav.is_null() && count > 0 {
        // SAFETY: espeak passes `count` valid samples at `wav` for the
        // duration of the callback.
        let samples = unsafe { std::slice::from_raw_parts(wav, count as usize) };
        SYNTH_OUT.with(|out| out.borrow_mut().extend_from_slice(samples));
    }
    0
}

fn with_espeak<T>(voice: &str, f: impl FnOnce(&Espeak) -> T) -> Result<T, EngineError> {
    let lock = ESPEAK
        .get_or_init(|| {
            // SAFETY: called once, under OnceLock; a null path selects the
            // data directory espeak-ng was built with.
            let rate = unsafe {
                espeak_Initialize(
                    AUDIO_OUTPUT_SYNCHRONOUS,
                    0,
                    std::ptr::null(),
                    INITIALIZE_DONT_EXIT,
                )
            };
            if rate <= 0 {
                return Err("espeak_Initialize failed: is espeak-ng-data installed?".into());
            }
            // SAFETY: the callback is a plain function valid for the program's life.
            unsafe { espeak_SetSynthCallback(collect_samples) };
            Ok(Mutex::new(Espeak {
                sample_rate: rate as u32,
                voice: String::new(),
            }))
        })
        .as_ref()
        .map_err(|e| EngineError::Espeak(e.clone()))?;
    let mut state = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.voice != voice {
        let name = CString::new(voice).map_err(|_| EngineError::Espeak("voice name".into()))?;
        // SAFETY: `name` is a valid C string for the call.
        if unsafe { espeak_SetVoiceByName(name.as_ptr()) } != EE_OK {
            return Err(EngineError::Espeak(format!(
                "espeak-ng has no voice {voice:?}"
            )));
        }
        state.voice = voice.to_owned();
    }
    Ok(f(&state))
}

/// The languages espeak-ng can speak, each with the identifier of the
/// voice that speaks it (the first language of each of espeak-ng's voices,
/// MBROLA voices excluded: they need data of their own), sorted by
/// language.
pub(crate) fn languages() -> Result<Vec<(String, String)>, EngineError> {
    with_espeak("en-us", |_| {
        let mut languages = Vec::new();
        // SAFETY: with a null spec espeak-ng returns its static,
        // null-terminated array of voices, valid until the next call; it
        // is read at once, under the library's lock.
        let mut list = unsafe { espeak_ListVoices(std::ptr::null()) };
        if list.is_null() {
            return languages;
        }
        loop {
            // SAFETY: `list` points into the null-terminated array.
            let voice = unsafe { *list };
            if voice.is_null() {
                break;
            }
            // SAFETY: each entry is a valid espeak_VOICE whose strings are
            // NUL-terminated; `languages` starts with a priority byte.
            let (identifier, language) = unsafe {
                let v = &*voice;
                let identifier = if v.identifier.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(v.identifier).to_string_lossy().into_owned()
                };
                let language = if v.languages.is_null() || *v.languages == 0 {
                    None
                } else {
                    Some(
                        CStr::from_ptr(v.languages.add(1))
                            .to_string_lossy()
                            .into_owned(),
                    )
                };
                (identifier, language)
            };
            if let Some(language) = language
                && !identifier.starts_with("mb/")
                && !language.is_empty()
                && !identifier.is_empty()
            {
                languages.push((language, identifier));
            }
            // SAFETY: the array continues until its null entry.
            list = unsafe { list.add(1) };
        }
        languages.sort();
        languages.dedup_by(|a, b| a.0 == b.0);
        languages
    })
}

/// The sample rate of espeak-ng's own synthesis, in Hz.
pub(crate) fn sample_rate(voice: &str) -> Result<u32, EngineError> {
    with_espeak(voice, |e| e.sample_rate)
}

/// IPA phonemes of `text` in `voice` (an espeak-ng voice such as `en-us`),
/// clause after clause, joined by spaces. Punctuation is not included: the
/// caller knows its clause's terminator.
pub(crate) fn phonemize(voice: &str, text: &str) -> Result<String, EngineError> {
    let c_text = CString::new(text.replace('\0', " "))
        .map_err(|_| EngineError::Espeak("text contains NUL".into()))?;
    with_espeak(voice, |_| {
        let mut out = String::new();
        let mut ptr = c_text.as_ptr().cast::<c_void>();
        while !ptr.is_null() {
            // SAFETY: `ptr` points into `c_text`, NUL-terminated, alive for
            // the loop; espeak advances it clause by clause and sets it to
            // null at the end. The returned string is espeak's static buffer,
            // copied before the next call (we hold the lock).
            let phonemes = unsafe { espeak_TextToPhonemes(&mut ptr, CHARS_UTF8, PHONEMES_IPA) };
            if phonemes.is_null() {
                break;
            }
            // SAFETY: non-null, NUL-terminated, valid until the next call.
            let clause = unsafe { CStr::from_ptr(phonemes) }.to_string_lossy();
            let clause = clause.trim();
            if !clause.is_empty() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(clause);
            }
        }
        out
    })
}

/// Speaks `text` with espeak-ng's formant voice at `speed` times its normal
/// rate (within espeak-ng's 80 to 450 words per minute); appends samples at
/// [`sample_rate`] to `out`.
pub(crate) fn synthesize(
    voice: &str,
    text: &str,
    speed: f32,
    out: &mut Vec<i16>,
) -> Result<(), EngineError> {
    let c_text = CString::new(text.replace('\0', " "))
        .map_err(|_| EngineError::Espeak("text contains NUL".into()))?;
    let rate = (RATE_NORMAL * speed).clamp(RATE_RANGE.0, RATE_RANGE.1) as c_int;
    let code = with_espeak(voice, |_| {
        // SAFETY: a plain setter on the library's global state, which the
        // lock held here protects.
        unsafe { espeak_SetParameter(ESPEAK_RATE, rate, 0) };
        SYNTH_OUT.with(|buf| buf.borrow_mut().clear());
        // SAFETY: `c_text` outlives the call; in synchronous mode espeak_Synth
        // returns after all audio went through the callback.
        let code = unsafe {
            espeak_Synth(
                c_text.as_ptr().cast(),
                c_text.as_bytes_with_nul().len(),
                0,
                POS_CHARACTER,
                0,
                CHARS_UTF8 as c_uint,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        SYNTH_OUT.with(|buf| out.extend_from_slice(&buf.borrow()));
        code
    })?;
    if code != EE_OK {
        return Err(EngineError::Espeak(format!("espeak_Synth returned {code}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phonemizes_the_reference_sentences() {
        assert_eq!(
            phonemize("en-us", "The quick brown fox jumps over the lazy dog.").expect("espeak"),
            "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ"
        );
        assert_eq!(
            phonemize("en-us", "This is a streaming speech test.").expect("espeak"),
            "ðɪs ɪz ɐ stɹˈiːmɪŋ spˈiːtʃ tˈɛst"
        );
    }

    #[test]
    fn lists_its_languages() {
        let languages = languages().expect("espeak");
        for expected in ["de", "en-us", "fr-fr"] {
            assert!(
                languages.iter().any(|(l, _)| l == expected),
                "{expected} in {languages:?}"
            );
        }
        assert!(languages.len() > 50, "{} languages", languages.len());
        // Every listed language can be spoken by its name.
        let mut failed = Vec::new();
        for (language, identifier) in &languages {
            let mut out = Vec::new();
            let r = synthesize(identifier, "a e i o u", 1.0, &mut out);
            if r.is_err() || out.len() < 1000 {
                failed.push(format!(
                    "{language} ({identifier}): {r:?}, {} samples",
                    out.len()
                ));
            }
        }
        assert!(failed.is_empty(), "cannot speak {failed:?}");
    }

    #[test]
    fn formant_voice_produces_audio() {
        let mut out = Vec::new();
        synthesize("en-us", "Hello world.", 1.0, &mut out).expect("espeak");
        let rate = sample_rate("en-us").expect("espeak") as usize;
        assert!(out.len() > rate / 2, "{} samples", out.len());
        assert!(out.iter().any(|s| s.unsigned_abs() > 1000));
    }

    #[test]
    fn unknown_voice_is_an_error() {
        assert!(phonemize("xx-nonexistent", "hello").is_err());
    }
}
