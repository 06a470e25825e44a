//! Writing the audio as a WAV file.

/// Writes mono s16 samples at `sample_rate` as a WAV file.
pub fn write_wav(
    path: &std::path::Path,
    samples: &[i16],
    sample_rate: u32,
) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for &s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()
}
