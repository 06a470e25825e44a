//! Checks on received audio.

/// Asserts that `samples` (48 kHz) sound like speech of `words` words:
/// plausible duration, loudness that varies over time, not silent, not
/// clipped.
pub fn assert_speech_like(samples: &[i16], words: usize) {
    let seconds = samples.len() as f64 / 48_000.0;
    // English speech runs at roughly 2–4 words per second.
    let (lo, hi) = (words as f64 / 5.0, words as f64 / 1.2 + 1.0);
    assert!(
        (lo..hi).contains(&seconds),
        "{seconds:.2} s of audio for {words} words (expected {lo:.1}–{hi:.1} s)"
    );
    let clipped = samples
        .iter()
        .filter(|s| s.unsigned_abs() >= 32_767)
        .count();
    assert_eq!(clipped, 0, "clipped samples");
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 3_000, "peak {peak}: too quiet to be speech");
    // RMS over 50 ms windows: speech alternates loud syllables and quiet gaps.
    let levels: Vec<f64> = samples
        .chunks(2_400)
        .map(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    let loud = levels.iter().filter(|&&l| l > 1_000.0).count();
    let quiet = levels.iter().filter(|&&l| l < 300.0).count();
    assert!(
        loud * 4 > levels.len(),
        "only {loud} of {} windows are loud",
        levels.len()
    );
    assert!(quiet > 0, "no quiet window at all: not speech-like");
}
