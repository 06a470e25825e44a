//! Engine output → 48 kHz s16 frames: gain, resampling, soft limiting,
//! and cutting into 960-sample frames with CRC-32C.
//!
//! Both stages keep their buffers between calls and are reset per request,
//! so the per-frame path allocates only the payload it hands on.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use tts_frame::{FRAME_SAMPLES, PAYLOAD_BYTES, SAMPLE_RATE, checksum, samples_to_bytes};

/// The resampler could not be built for this rate.
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {rate} Hz to 48 kHz: {reason}")]
pub struct ResampleError {
    rate: u32,
    reason: String,
}

/// Streaming resampler from an engine's rate to 48 kHz.
///
/// Input is fed in 20 ms chunks (441 samples at 22,050 Hz → exactly 960 out).
/// The FFT resampler delays its output by about
/// [`rubato::Resampler::output_delay`] samples; those leading samples are
/// dropped, and [`finish`](Self::finish)
/// pushes silence through until the output holds exactly
/// `ceil(input × 48000 / rate)` samples.
pub struct Resampler {
    fft: Option<Fft<f32>>,
    rate: u32,
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    to_skip: usize,
    input_total: u64,
    output_total: u64,
}

impl Resampler {
    /// A resampler from `rate` Hz; a pass-through when `rate` is 48,000.
    pub fn new(rate: u32) -> Result<Self, ResampleError> {
        let fft = if rate == SAMPLE_RATE {
            None
        } else {
            let err = |reason: String| ResampleError { rate, reason };
            let g = gcd(rate, SAMPLE_RATE);
            let step = (rate / g) as usize;
            // About 20 ms of input, a whole number of ratio steps.
            let chunk = step * ((rate as usize / 50).div_ceil(step)).max(1);
            Some(
                Fft::new(
                    rate as usize,
                    SAMPLE_RATE as usize,
                    chunk,
                    1,
                    FixedSync::Both,
                )
                .map_err(|e| err(e.to_string()))?,
            )
        };
        let mut r = Self {
            fft,
            rate,
            pending: Vec::new(),
            chunk_out: Vec::new(),
            to_skip: 0,
            input_total: 0,
            output_total: 0,
        };
        r.reset();
        Ok(r)
    }

    /// The input rate, in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Forgets all state: ready for a new request.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.input_total = 0;
        self.output_total = 0;
        if let Some(fft) = &mut self.fft {
            fft.reset();
            // The output lines up with the input one sample before the
            // reported delay (checked by `resampling_preserves_the_signal_without_delay`).
            self.to_skip = fft.output_delay().saturating_sub(1);
            self.chunk_out.resize(fft.output_frames_max(), 0.0);
        }
    }

    /// Output samples a request of `input` samples produces in all.
    pub fn output_len(&self, input: u64) -> u64 {
        (input * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.rate))
    }

    /// Resamples `input`, appending every whole chunk's output to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.input_total += input.len() as u64;
        let Some(fft) = &self.fft else {
            out.extend_from_slice(input);
            self.output_total += input.len() as u64;
            return;
        };
        let chunk = fft.input_frames_next();
        let mut rest = input;
        while !rest.is_empty() {
            let take = (chunk - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == chunk {
                self.run_chunk(out);
            }
        }
    }

    /// Flushes the tail: the last partial chunk and the resampler's delay.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = self.output_len(self.input_total);
        let Some(fft) = &self.fft else { return };
        let chunk = fft.input_frames_next();
        while self.output_total < expected {
            self.pending.resize(chunk, 0.0);
            self.run_chunk(out);
        }
        let excess = (self.output_total - expected) as usize;
        out.truncate(out.len() - excess);
        self.output_total = expected;
    }

    fn run_chunk(&mut self, out: &mut Vec<f32>) {
        let Some(fft) = &mut self.fft else { return };
        let n_in = self.pending.len();
        let n_out = self.chunk_out.len();
        let produced = match (
            InterleavedSlice::new(&self.pending[..], 1, n_in),
            InterleavedSlice::new_mut(&mut self.chunk_out[..], 1, n_out),
        ) {
            (Ok(input), Ok(mut output)) => fft
                .process_into_buffer(&input, &mut output, None)
                .map_or(0, |(_, produced)| produced),
            _ => 0,
        };
        self.pending.clear();
        let skip = self.to_skip.min(produced);
        self.to_skip -= skip;
        out.extend_from_slice(&self.chunk_out[skip..produced]);
        self.output_total += (produced - skip) as u64;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

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
    };
    *sequence += 1;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampled_length_is_exact_for_any_input_length() {
        let mut r = Resampler::new(22_050).expect("resampler");
        for n in [0usize, 1, 440, 441, 442, 10_000, 22_050, 33_333] {
            r.reset();
            let input = sine(22_050, 440.0, n);
            let mut out = Vec::new();
            // Fed in uneven pieces, as clauses arrive.
            for piece in input.chunks(1000) {
                r.process(piece, &mut out);
            }
            r.finish(&mut out);
            let expected = (n as u64 * 48_000).div_ceil(22_050) as usize;
            assert_eq!(out.len(), expected, "input {n}");
        }
    }

    #[test]
    fn resampling_preserves_the_signal_without_delay() {
        let mut r = Resampler::new(22_050).expect("resampler");
        let input = sine(22_050, 440.0, 22_050);
        let mut out = Vec::new();
        r.process(&input, &mut out);
        r.finish(&mut out);
        let reference = sine(48_000, 440.0, out.len());
        // Away from the edges the output is the same sine, in phase (the
        // delay was removed) and at the same level.
        let worst = (2_000..out.len() - 2_000)
            .map(|i| (out[i] - reference[i]).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.005, "max deviation {worst}");
    }

    #[test]
    fn passes_48k_through() {
        let mut r = Resampler::new(48_000).expect("resampler");
        let mut out = Vec::new();
        r.process(&[0.1, 0.2, 0.3], &mut out);
        r.finish(&mut out);
        assert_eq!(out, vec![0.1, 0.2, 0.3]);
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
