//! Text → phoneme ids for Piper voices: espeak-ng's phonemes mapped through
//! the voice's `phoneme_id_map`, cut into runs that one text-part call
//! takes, with the ids each word spans (for word timestamps).

use std::collections::HashMap;
use std::ops::Range;

use unicode_normalization::UnicodeNormalization;

use super::words::{self, AlignedWord};
use super::{EngineError, espeak};
use crate::text::Clause;

/// The pad after every phoneme.
pub(super) const PAD: char = '_';
/// The start of a run.
pub(super) const BOS: char = '^';
/// The end of a run.
pub(super) const EOS: char = '$';

/// Text → phoneme ids, shared by a voice's synthesis threads.
pub(super) struct Phonemizer {
    espeak_voice: String,
    /// Each phoneme's ids.
    pub(super) ids: HashMap<char, Vec<i64>>,
}

impl Phonemizer {
    /// The phonemizer for espeak-ng voice `espeak_voice` and a voice's
    /// `phoneme_id_map`; `Err` says what is wrong with the map.
    pub(super) fn new(
        espeak_voice: String,
        map: HashMap<String, Vec<i64>>,
    ) -> Result<Self, String> {
        let mut ids = HashMap::new();
        for (symbol, id) in map {
            let mut chars = symbol.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, id);
                }
                _ => return Err(format!("phoneme {symbol:?} is not one character")),
            }
        }
        for required in [PAD, BOS, EOS] {
            if !ids.contains_key(&required) {
                return Err(format!("phoneme_id_map lacks {required:?}"));
            }
        }
        Ok(Self { espeak_voice, ids })
    }

    /// The espeak-ng voice that phonemizes.
    pub(super) fn espeak_voice(&self) -> &str {
        &self.espeak_voice
    }

    /// Phoneme ids for one clause, as the reference Piper implementation
    /// builds them: `^`, then each phoneme (NFD-decomposed) followed by the
    /// pad `_`, the clause's punctuation likewise, then `$`.
    pub(super) fn ids(&self, clause: &Clause) -> Result<Vec<i64>, EngineError> {
        Ok(self.wrap(&self.phonemes(clause)?).0)
    }

    /// The clause's phonemes (NFD-decomposed), its punctuation last.
    fn phonemes(&self, clause: &Clause) -> Result<Vec<char>, EngineError> {
        let mut phonemes = espeak::phonemize(&self.espeak_voice, &clause.text)?;
        if let Some(t) = clause.terminator {
            phonemes.push(t);
        }
        Ok(phonemes.nfd().collect())
    }

    /// `^`, each phoneme the voice knows followed by the pad `_`, `$`; and
    /// for each phoneme the ids it became (with its pad; empty when the
    /// voice does not know it).
    fn wrap(&self, phonemes: &[char]) -> (Vec<i64>, Vec<Range<usize>>) {
        let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
        let mut spans = Vec::with_capacity(phonemes.len());
        let pad = &self.ids[&PAD];
        ids.extend_from_slice(&self.ids[&BOS]);
        ids.extend_from_slice(pad);
        for c in phonemes {
            let from = ids.len();
            // Symbols the voice was not trained on are skipped, as Piper does.
            if let Some(id) = self.ids.get(c) {
                ids.extend_from_slice(id);
                ids.extend_from_slice(pad);
            }
            spans.push(from..ids.len());
        }
        ids.extend_from_slice(&self.ids[&EOS]);
        (ids, spans)
    }

    /// The clause's words and the phonemes each covers (see [`words`]).
    fn words(&self, clause: &Clause, phonemes: &[char]) -> Result<Vec<AlignedWord>, EngineError> {
        let mut own = Vec::new();
        for word in words::words(&clause.text) {
            let sounds: Vec<char> = espeak::phonemize(&self.espeak_voice, word)?.nfd().collect();
            own.push((word, sounds));
        }
        Ok(words::align(&own, phonemes))
    }

    /// The clause's ids in runs of at most [`MAX_IDS`], cut between words
    /// (within a word only if one word alone is longer): what one text-part
    /// run may take, so that memory stays bounded whatever the text (the
    /// text encoder's attention grows with the square of its input). With
    /// `timestamps`, each run also says which ids its words span.
    pub(super) fn id_runs(
        &self,
        clause: &Clause,
        timestamps: bool,
    ) -> Result<Vec<Run>, EngineError> {
        let phonemes = self.phonemes(clause)?;
        let words = if timestamps {
            self.words(clause, &phonemes)?
        } else {
            Vec::new()
        };
        // Each phoneme costs two ids; `^ _ … $` three more.
        let max_phonemes = (MAX_IDS - 3) / 2;
        let mut runs = Vec::new();
        let mut start = 0;
        while start < phonemes.len() || runs.is_empty() {
            let hard_end = (start + max_phonemes).min(phonemes.len());
            let end = if hard_end == phonemes.len() {
                hard_end
            } else {
                // After the last space in the run, if there is one.
                phonemes[start..hard_end]
                    .iter()
                    .rposition(|&c| c == ' ')
                    .map_or(hard_end, |i| start + i + 1)
            };
            let (ids, spans) = self.wrap(&phonemes[start..end]);
            let last = end == phonemes.len();
            let words = words
                .iter()
                .filter(|w| {
                    let at = w.phonemes.start;
                    (start..end).contains(&at) || (last && at >= end)
                })
                .map(|w| {
                    let local = |i: usize| i.clamp(start, end) - start;
                    let covered = &spans[local(w.phonemes.start)..local(w.phonemes.end)];
                    // A word with no sound here is a point where the next
                    // phoneme starts.
                    let at = spans
                        .get(local(w.phonemes.start))
                        .map_or(ids.len() - 1, |s| s.start);
                    let lo = covered
                        .iter()
                        .find(|s| !s.is_empty())
                        .map_or(at, |s| s.start);
                    let hi = covered
                        .iter()
                        .rev()
                        .find(|s| !s.is_empty())
                        .map_or(lo, |s| s.end);
                    (w.text.clone(), lo..hi)
                })
                .collect();
            runs.push(Run { ids, words });
            start = end;
        }
        Ok(runs)
    }
}

/// A run of a clause's phoneme ids (what one text-part call takes) and the
/// words that start in it.
pub(super) struct Run {
    /// The ids.
    pub(super) ids: Vec<i64>,
    /// Each word and the ids it spans (its phonemes with their pads).
    pub(super) words: Vec<(String, Range<usize>)>,
}

impl Run {
    /// Where each word lies in latent frames, given the frames of each id
    /// (the text part's durations) and the frames before this run.
    pub(super) fn word_frames(
        &self,
        durations: &[f32],
        before: usize,
    ) -> Vec<(String, usize, usize)> {
        let mut at = Vec::with_capacity(durations.len() + 1);
        let mut sum = before;
        at.push(sum);
        for d in durations {
            sum += d.max(0.0) as usize;
            at.push(sum);
        }
        let frame = |id: usize| at.get(id).copied().unwrap_or(sum);
        self.words
            .iter()
            .map(|(text, ids)| (text.clone(), frame(ids.start), frame(ids.end)))
            .collect()
    }
}

/// Most phoneme ids one text-part run takes: a 300-character English
/// clause, the longest the text splitter makes, has about 700.
pub(super) const MAX_IDS: usize = 1_000;
