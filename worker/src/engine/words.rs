//! Word timestamps for voices that speak phonemes: which of a clause's
//! phonemes belong to which word of its text, and so which latent frames.
//!
//! espeak-ng phonemizes a clause as a whole, and its output does not always
//! have one group per word: it joins some words (`of the` → `ʌvðə`), splits
//! others (`123` → three number words) and reduces them in context (`to` →
//! `tə`). Each word is therefore also phonemized on its own, and the
//! concatenated word phonemes are aligned to the clause's by edit distance:
//! a word starts where its first phoneme aligned, even inside a group.

use std::ops::Range;

/// A word of the text and the clause phonemes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlignedWord {
    /// The word as written, without the punctuation around it.
    pub(crate) text: String,
    /// Indices into the clause's phonemes; empty when the word has no
    /// sound of its own there.
    pub(crate) phonemes: Range<usize>,
}

/// The words of `text` to time: whitespace-separated, with leading and
/// trailing punctuation removed; pieces with no letter or digit are not
/// words.
pub(crate) fn words(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether a clause phoneme is a sound (not a word gap or punctuation).
fn is_sound(c: char) -> bool {
    !c.is_whitespace() && !".,;:!?".contains(c)
}

/// What the alignment compares: sounds, and word gaps as one space.
fn compared(c: char) -> Option<char> {
    if c.is_whitespace() {
        Some(' ')
    } else {
        is_sound(c).then_some(c)
    }
}

/// Aligns `words` (each with its own phonemes) to the clause's
/// `phonemes`. Every word gets a range, in order, not overlapping.
pub(crate) fn align(words: &[(&str, Vec<char>)], phonemes: &[char]) -> Vec<AlignedWord> {
    // The clause as compared, with each element's index in `phonemes`.
    let clause: Vec<(usize, char)> = phonemes
        .iter()
        .enumerate()
        .filter_map(|(i, &c)| compared(c).map(|c| (i, c)))
        .collect();
    // The words' own phonemes, a space between words; where each starts.
    let mut own = Vec::new();
    let mut starts = Vec::with_capacity(words.len());
    for (_, p) in words {
        if !own.is_empty() {
            own.push(' ');
        }
        starts.push(own.len());
        let sounds = p.iter().filter_map(|&c| compared(c));
        own.extend(sounds.skip_while(|&c| c == ' '));
        while own.last() == Some(&' ') && own.len() > starts[starts.len() - 1] {
            own.pop();
        }
    }
    let b: Vec<char> = clause.iter().map(|&(_, c)| c).collect();
    let at = positions(&own, &b);
    let mut aligned = Vec::with_capacity(words.len());
    // Word `w` starts where the gap before it aligned (the first word at
    // the clause's start), so a sound the words do not have goes to the
    // word it sits in, not to the next one.
    let boundary = |w: usize| if w == 0 { 0 } else { at[starts[w] - 1] };
    for (w, (text, _)) in words.iter().enumerate() {
        let mut lo = boundary(w);
        let mut hi = if w + 1 < words.len() {
            boundary(w + 1)
        } else {
            b.len()
        }
        .max(lo);
        while lo < hi && b[lo] == ' ' {
            lo += 1;
        }
        while hi > lo && b[hi - 1] == ' ' {
            hi -= 1;
        }
        let range = if lo < hi {
            clause[lo].0..clause[hi - 1].0 + 1
        } else {
            let at = clause.get(lo).map_or(phonemes.len(), |s| s.0);
            at..at
        };
        aligned.push(AlignedWord {
            text: (*text).to_owned(),
            phonemes: range,
        });
    }
    aligned
}

/// What replacing `x` by `y` costs: nothing when equal, one for another
/// sound, and more than leaving both out for a sound against a word gap
/// (so that gaps align with gaps).
fn substitution(x: char, y: char) -> u32 {
    match (x == y, x == ' ' || y == ' ') {
        (true, _) => 0,
        (false, false) => 1,
        (false, true) => 3,
    }
}

/// For each element of `a`, the index of `b` it aligns to under the
/// least-edit alignment (the next element of `b` when it aligns to none),
/// plus one entry past the end (`b.len()`).
fn positions(a: &[char], b: &[char]) -> Vec<usize> {
    let (n, m) = (a.len(), b.len());
    let width = m + 1;
    let mut cost = vec![0u32; (n + 1) * width];
    for (j, c) in cost[..width].iter_mut().enumerate() {
        *c = j as u32;
    }
    for i in 1..=n {
        cost[i * width] = i as u32;
        for j in 1..=m {
            let substitute = cost[(i - 1) * width + j - 1] + substitution(a[i - 1], b[j - 1]);
            let skip_a = cost[(i - 1) * width + j] + 1;
            let skip_b = cost[i * width + j - 1] + 1;
            cost[i * width + j] = substitute.min(skip_a).min(skip_b);
        }
    }
    let mut at = vec![0; n + 1];
    at[n] = m;
    let (mut i, mut j) = (n, m);
    while i > 0 {
        let here = cost[i * width + j];
        if j > 0 && here == cost[(i - 1) * width + j - 1] + substitution(a[i - 1], b[j - 1]) {
            at[i - 1] = j - 1;
            i -= 1;
            j -= 1;
        } else if here == cost[(i - 1) * width + j] + 1 {
            // `a[i − 1]` has no counterpart: it sits where `b` goes on.
            at[i - 1] = j;
            i -= 1;
        } else {
            j -= 1;
        }
    }
    // Keep the starts in order whatever ties the walk took.
    for k in (0..n).rev() {
        at[k] = at[k].min(at[k + 1]);
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    fn spans(words: &[(&str, &str)], clause: &str) -> Vec<String> {
        let words: Vec<(&str, Vec<char>)> = words.iter().map(|(w, p)| (*w, chars(p))).collect();
        let phonemes = chars(clause);
        align(&words, &phonemes)
            .into_iter()
            .map(|w| {
                let sound: String = phonemes[w.phonemes].iter().collect();
                format!("{}={sound}", w.text)
            })
            .collect()
    }

    #[test]
    fn words_are_trimmed_of_punctuation_and_need_a_letter_or_digit() {
        assert_eq!(
            words("\"Hello,\" she said — U.S.A. 123! (ok)"),
            ["Hello", "she", "said", "U.S.A", "123", "ok"]
        );
    }

    #[test]
    fn one_group_per_word_maps_one_to_one() {
        assert_eq!(
            spans(
                &[("The", "ðə"), ("quick", "kwˈɪk"), ("over", "ˈoʊvɚ")],
                "ðə kwˈɪk ˌoʊvɚ."
            ),
            ["The=ðə", "quick=kwˈɪk", "over=ˌoʊvɚ"]
        );
    }

    #[test]
    fn joined_words_are_cut_inside_their_group() {
        // espeak-ng joins "of the" into one group.
        assert_eq!(
            spans(
                &[
                    ("matter", "mˈæɾɚ"),
                    ("of", "ʌv"),
                    ("the", "ðə"),
                    ("USA", "jˌuːˌɛsˈeɪ")
                ],
                "mˈæɾɚɹ ʌvðə jˌuːˌɛsˈeɪ"
            ),
            ["matter=mˈæɾɚɹ", "of=ʌv", "the=ðə", "USA=jˌuːˌɛsˈeɪ"]
        );
    }

    #[test]
    fn a_word_spoken_as_several_keeps_them_all() {
        assert_eq!(
            spans(
                &[
                    ("buy", "bˈaɪ"),
                    ("123", "wˈʌnhˈʌndɹɪd twˈɛnti θɹˈiː"),
                    ("apples", "ˈæpəlz")
                ],
                "bˈaɪ wˈʌnhˈʌndɹɪd twˈɛnti θɹˈiː ˈæpəlz."
            ),
            [
                "buy=bˈaɪ",
                "123=wˈʌnhˈʌndɹɪd twˈɛnti θɹˈiː",
                "apples=ˈæpəlz"
            ]
        );
    }

    #[test]
    fn reduced_and_missing_words_keep_their_order() {
        // "to" is reduced in context; "e.g." is read as "for example".
        let got = spans(
            &[
                ("go", "ɡˈoʊ"),
                ("to", "tuː"),
                ("eg", "ˌiːdʒˈiː"),
                ("now", "nˈaʊ"),
            ],
            "ɡˌoʊ tə fˌɔːɹɛɡzˈæmpəl nˈaʊ",
        );
        assert_eq!(got[0], "go=ɡˌoʊ");
        assert_eq!(got[1], "to=tə");
        assert_eq!(got[3], "now=nˈaʊ");
        let words: Vec<(&str, Vec<char>)> =
            vec![("a", chars("ɐ")), ("b", chars("")), ("c", chars("sˈiː"))];
        let aligned = align(&words, &chars("ɐ sˈiː"));
        assert!(
            aligned
                .windows(2)
                .all(|w| w[0].phonemes.end <= w[1].phonemes.start)
        );
        assert_eq!(
            aligned[1].phonemes.len(),
            0,
            "a word with no sound is a point"
        );
    }
}
