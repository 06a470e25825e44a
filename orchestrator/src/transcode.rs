//! A request's frames in the format its client asked for. The worker always
//! sends 48 kHz s16le; each verified frame becomes exactly one frame of the
//! client's format (same sequence, flags and timestamps), so the frame
//! contract holds at every rate and encoding. A converted payload gets its
//! own CRC-32C; an unconverted one keeps the worker's.

use bytes::Bytes;
use tts_frame::{
    Encoding, Format, MAX_OPUS_PACKET, Resampler, bytes_to_samples, mulaw_encode, samples_to_bytes,
};

/// A format that cannot be produced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TranscodeError {
    /// The resampler could not be built.
    #[error(transparent)]
    Resample(#[from] tts_frame::ResampleError),
    /// libopus refused.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Converts one request's frames, keeping state from frame to frame.
pub(crate) struct Transcoder {
    format: Format,
    resampler: Option<Resampler>,
    opus: Option<opus::Encoder>,
    input: Vec<f32>,
    output: Vec<f32>,
    pcm: Vec<i16>,
    /// Room for the largest Opus packet, reused frame to frame.
    packet: Vec<u8>,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// A converter to `format`; Opus at `opus_bitrate` bits per second.
    pub(crate) fn new(format: Format, opus_bitrate: u32) -> Result<Self, TranscodeError> {
        let resampler = (format.sample_rate != tts_frame::SAMPLE_RATE)
            .then(|| Resampler::frame_locked(tts_frame::SAMPLE_RATE, format.sample_rate))
            .transpose()?;
        let opus = match format.encoding {
            Encoding::Opus => {
                let mut enc = opus::Encoder::new(
                    tts_frame::SAMPLE_RATE,
                    opus::Channels::Mono,
                    opus::Application::Voip,
                )?;
                enc.set_bitrate(opus::Bitrate::Bits(opus_bitrate as i32))?;
                Some(enc)
            }
            _ => None,
        };
        Ok(Self {
            format,
            resampler,
            opus,
            input: Vec::with_capacity(tts_frame::FRAME_SAMPLES),
            output: Vec::with_capacity(tts_frame::FRAME_SAMPLES),
            pcm: Vec::with_capacity(tts_frame::FRAME_SAMPLES),
            packet: vec![0; MAX_OPUS_PACKET],
        })
    }

    /// Whether frames pass through unchanged.
    pub(crate) fn is_identity(&self) -> bool {
        self.format == Format::PIPELINE
    }

    /// One 48 kHz PCM frame (`samples` of them real) in the client's
    /// format: its payload and how many of its samples are real.
    pub(crate) fn convert(
        &mut self,
        payload: Bytes,
        samples: u32,
    ) -> Result<(Bytes, u32), TranscodeError> {
        if self.is_identity() {
            return Ok((payload, samples));
        }
        self.pcm.clear();
        match &mut self.resampler {
            None => self.pcm.extend(bytes_to_samples(&payload)),
            Some(r) => {
                self.input.clear();
                self.input
                    .extend(bytes_to_samples(&payload).map(|s| f32::from(s) / 32768.0));
                self.output.clear();
                r.process(&self.input, &mut self.output);
                self.pcm.extend(
                    self.output
                        .iter()
                        .map(|x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
                );
            }
        }
        let rate_samples = (u64::from(samples) * u64::from(self.format.sample_rate))
            .div_ceil(u64::from(tts_frame::SAMPLE_RATE)) as u32;
        // One allocation per frame, of the payload's exact size: the
        // payload is handed on and queued.
        let payload = match (&mut self.opus, self.format.encoding) {
            (Some(enc), _) => {
                let n = enc.encode(&self.pcm, &mut self.packet)?;
                Bytes::copy_from_slice(&self.packet[..n])
            }
            (None, Encoding::Mulaw) => self.pcm.iter().map(|&s| mulaw_encode(s)).collect(),
            (None, _) => {
                let mut bytes = vec![0; self.pcm.len() * 2];
                samples_to_bytes(&self.pcm, &mut bytes);
                Bytes::from(bytes)
            }
        };
        Ok((payload, rate_samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tts_frame::{Validator, mulaw_decode};

    fn tone_frames(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|f| {
                let mut b = Vec::with_capacity(1920);
                for i in 0..960 {
                    let t = (f * 960 + i) as f32 / 48_000.0;
                    let s = ((t * 440.0 * std::f32::consts::TAU).sin() * 8_000.0) as i16;
                    b.extend_from_slice(&s.to_le_bytes());
                }
                Bytes::from(b)
            })
            .collect()
    }

    #[test]
    fn every_format_gives_one_valid_frame_per_frame() {
        let frames = tone_frames(10);
        for (encoding, rate) in [
            (Encoding::PcmS16le, 8_000),
            (Encoding::PcmS16le, 16_000),
            (Encoding::PcmS16le, 24_000),
            (Encoding::PcmS16le, 48_000),
            (Encoding::Mulaw, 8_000),
            (Encoding::Opus, 48_000),
        ] {
            let format = Format::negotiate(encoding, Some(rate)).expect("format");
            let mut t = Transcoder::new(format, 32_000).expect("transcoder");
            let mut v = Validator::for_format(format);
            for (i, f) in frames.iter().enumerate() {
                let (payload, samples) = t.convert(f.clone(), 960).expect("converted");
                assert_eq!(samples as usize, format.frame_samples(), "{format:?}");
                let crc = tts_frame::checksum(&payload);
                v.check(i as u32, crc, &payload)
                    .unwrap_or_else(|e| panic!("{format:?} frame {i}: {e}"));
            }
        }
    }

    #[test]
    fn mulaw_keeps_the_signal_and_opus_decodes_back_to_it() {
        let frames = tone_frames(25);
        let format = Format::negotiate(Encoding::Mulaw, None).expect("format");
        let mut t = Transcoder::new(format, 32_000).expect("transcoder");
        let (payload, _) = t.convert(frames[5].clone(), 960).expect("converted");
        let peak = payload
            .iter()
            .map(|&b| mulaw_decode(b).unsigned_abs())
            .max();
        assert!(
            peak.is_some_and(|p| (7_000..9_000).contains(&p)),
            "{peak:?}"
        );

        let format = Format::negotiate(Encoding::Opus, None).expect("format");
        let mut t = Transcoder::new(format, 32_000).expect("transcoder");
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
        let mut total = 0usize;
        let mut energy = 0f64;
        for f in &frames {
            let (packet, _) = t.convert(f.clone(), 960).expect("converted");
            assert!(packet.len() < 400, "{} bytes at 32 kbit/s", packet.len());
            let mut pcm = [0i16; 960];
            let n = dec.decode(&packet, &mut pcm, false).expect("decoded");
            total += n;
            energy += pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        }
        assert_eq!(total, 25 * 960);
        let rms = (energy / total as f64).sqrt();
        // The tone's RMS is 8000/√2 ≈ 5657; the codec keeps it within 20 %.
        assert!((4_500.0..6_800.0).contains(&rms), "rms {rms}");
    }
}
