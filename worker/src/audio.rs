//! Engine output → 48 kHz s16 frames: gain, resampling, soft limiting,
//! and cutting into 960-sample frames with CRC-32C.
//!
//! Both stages keep their buffers between calls and are reset per request,
//! so the per-frame path allocates only the payload it hands on.

use tts_frame::{FRAME_SAMPLES, PAYLOAD_BYTES, checksum, samples_to_bytes};
pub use tts_frame::{ResampleError, Resampler};

/// Level above which the soft limiter bends the curve.
const KNEE: f32 = 0.9;

/// Applies `gain`, then a soft limiter that maps any level to below full
/// scale (|x| < 0.9999), so output never clips, and converts to s16.
pub fn to_s16(sample: f32, gain: f32) -> i16 {
    let x = sample * gain;
    let m = x.abs();
    let limited = if m <= KNEE {
        m
    } else {
        KNEE + (1.0 - KNEE - 1e-4) * ((m - KNEE) / (1.0 - KNEE)).tanh()
    };
    (limited.copysign(x) * 32767.0).round() as i16
}

/// The signal-to-noise ratio, in dB, of `other` against `reference`
/// (their difference as the noise): infinite when they are equal.
pub fn snr_db(reference: &[f32], other: &[f32]) -> f64 {
    let (signal, noise) = reference
        .iter()
        .zip(other)
        .fold((0.0, 0.0), |(s, n), (&r, &o)| {
            (s + f64::from(r).powi(2), n + f64::from(r - o).powi(2))
        });
    10.0 * (signal / noise).log10()
}

/// A fault injected into a request's 48 kHz samples before framing (a
/// test hook: the checksums stay valid, only the quality checks can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFault {
    /// Adds this constant to every sample (after scaling the speech to
    /// 90 %, so that the offset does not push its peaks into clipping:
    /// the offset alone is the fault).
    DcOffset(i16),
    /// Amplifies samples `from_ms..from_ms + len_ms` sixteen times, flat
    /// against full scale.
    Clipping {
        /// Start, ms into the request's audio.
        from_ms: u32,
        /// Length, ms.
        len_ms: u32,
    },
    /// Zeroes samples `from_ms..from_ms + len_ms`.
    Dropout {
        /// Start, ms into the request's audio.
        from_ms: u32,
        /// Length, ms.
        len_ms: u32,
    },
}

impl AudioFault {
    /// The sample at position `at` (samples since the request's start).
    pub fn apply(self, at: u64, sample: i16) -> i16 {
        let within = |from_ms: u32, len_ms: u32| {
            let ms = at * 1000 / u64::from(tts_frame::SAMPLE_RATE);
            (u64::from(from_ms)..u64::from(from_ms) + u64::from(len_ms)).contains(&ms)
        };
        match self {
            Self::DcOffset(offset) => ((f32::from(sample) * 0.9) as i16).saturating_add(offset),
            Self::Clipping { from_ms, len_ms } if within(from_ms, len_ms) => {
                sample.saturating_mul(16)
            }
            Self::Dropout { from_ms, len_ms } if within(from_ms, len_ms) => 0,
            _ => sample,
        }
    }
}

/// One 20 ms frame ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// 0-based position in the request.
    pub sequence: u32,
    /// 1,920 bytes of s16le, zero-padded on the last frame.
    pub payload: Vec<u8>,
    /// CRC-32C of `payload`.
    pub crc32c: u32,
    /// Samples of real audio in the payload.
    pub samples: u32,
    /// Whether this is the request's last frame.
    pub last: bool,
    /// Words placed since the last frame (requests with timestamps).
    pub words: Vec<tts_proto::v1::Word>,
}

/// Cuts a stream of 48 kHz samples into frames. It keeps at least one
/// sample back until [`finish`](Self::finish), so that the last frame,
/// full or partial, is the one marked `last`.
#[derive(Default)]
pub struct Framer {
    buffer: Vec<i16>,
    sequence: u32,
}

impl Framer {
    /// Forgets all state: ready for a new request.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.sequence = 0;
    }

    /// Frames cut so far (the next frame's sequence number).
    pub fn frames_cut(&self) -> u32 {
        self.sequence
    }

    /// Adds samples; returns the frames now complete (never the last one).
    pub fn push(&mut self, samples: impl IntoIterator<Item = i16>, frames: &mut Vec<Frame>) {
        self.buffer.extend(samples);
        let whole = self.buffer.len().saturating_sub(1) / FRAME_SAMPLES;
        for i in 0..whole {
            let chunk = &self.buffer[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES];
            frames.push(make_frame(&mut self.sequence, chunk, false));
        }
        self.buffer.drain(..whole * FRAME_SAMPLES);
    }

    /// The last frame, zero-padded; `None` if the request produced no audio.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.buffer.is_empty() {
            return None;
        }
        let frame = make_frame(&mut self.sequence, &self.buffer, true);
        self.buffer.clear();
        Some(frame)
    }
}

fn make_frame(sequence: &mut u32, samples: &[i16], last: bool) -> Frame {
    let mut payload = vec![0u8; PAYLOAD_BYTES];
    samples_to_bytes(samples, &mut payload[..samples.len() * 2]);
    let frame = Frame {
        sequence: *sequence,
        crc32c: checksum(&payload),
        payload,
        samples: samples.len() as u32,
        last,
        words: Vec::new(),
    };
    *sequence += 1;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snr_is_the_signal_over_the_difference() {
        let reference = [1.0, -1.0, 1.0, -1.0];
        let tenth_off = reference.map(|x| x * 0.9);
        assert!((snr_db(&reference, &tenth_off) - 20.0).abs() < 1e-4);
        assert_eq!(snr_db(&reference, &reference), f64::INFINITY);
    }

    #[test]
    fn limiter_never_reaches_full_scale() {
        assert_eq!(to_s16(0.5, 1.0), 16384);
        assert_eq!(to_s16(-0.25, 2.0), -16384);
        for x in [0.95f32, 1.0, 2.0, 100.0] {
            let v = to_s16(x, 1.0);
            assert!(v < i16::MAX && v > 29_490, "{x} → {v}");
            assert_eq!(to_s16(-x, 1.0), -v);
        }
    }

    #[test]
    fn framer_marks_only_the_true_last_frame() {
        for n in [1usize, 959, 960, 961, 1920, 5000] {
            let mut f = Framer::default();
            let mut frames = Vec::new();
            f.push((0..n).map(|i| (i % 1000) as i16 + 100), &mut frames);
            frames.extend(f.finish());
            assert_eq!(frames.len(), n.div_ceil(960), "{n} samples");
            let total: u32 = frames.iter().map(|fr| fr.samples).sum();
            assert_eq!(total as usize, n);
            for (i, fr) in frames.iter().enumerate() {
                assert_eq!(fr.sequence as usize, i);
                assert_eq!(fr.last, i == frames.len() - 1);
                assert_eq!(fr.payload.len(), 1920);
                assert_eq!(fr.crc32c, checksum(&fr.payload));
            }
            let last = frames.last().expect("a frame");
            let pad = &last.payload[last.samples as usize * 2..];
            assert!(pad.iter().all(|&b| b == 0), "padding is zero");
        }
        assert!(Framer::default().finish().is_none());
    }
}
