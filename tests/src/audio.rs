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

/// Decodes a whole MP3 or FLAC file (`extension` says which) with
/// symphonia: its mono samples and rate.
pub fn decode(bytes: &[u8], extension: &str) -> (Vec<i16>, u32) {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let source = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        Default::default(),
    );
    let mut hint = Hint::new();
    hint.with_extension(extension);
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{extension}: not a stream symphonia reads: {e}"));
    let mut format = probed.format;
    let track = format.default_track().expect("an audio track");
    let (id, rate) = (track.id, track.codec_params.sample_rate.expect("a rate"));
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .expect("a decoder");
    let mut samples = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{extension}: {e}"),
        };
        if packet.track_id() != id {
            continue;
        }
        let decoded = decoder
            .decode(&packet)
            .unwrap_or_else(|e| panic!("{extension}: {e}"));
        let mut buffer = SampleBuffer::<i16>::new(decoded.capacity() as u64, *decoded.spec());
        buffer.copy_interleaved_ref(decoded);
        samples.extend_from_slice(buffer.samples());
    }
    (samples, rate)
}

/// The signal-to-noise ratio of `got` against `reference`, in dB, at the
/// lag (0 to `max_lag` samples of delay in `got`) where they match best:
/// how closely a lossy codec kept the waveform.
pub fn snr_db(reference: &[i16], got: &[i16], max_lag: usize) -> f64 {
    let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    (0..=max_lag)
        .map(|lag| {
            let noise: f64 = reference
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    let g = got.get(i + lag).copied().unwrap_or(0);
                    (f64::from(r) - f64::from(g)).powi(2)
                })
                .sum();
            10.0 * (signal / noise.max(1.0)).log10()
        })
        .fold(f64::NEG_INFINITY, f64::max)
}
