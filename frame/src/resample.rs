//! Streaming sample-rate conversion with exact output length and no delay.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// The resampler could not be built for this rate.
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {from} Hz to {to} Hz: {reason}")]
pub struct ResampleError {
    from: u32,
    to: u32,
    reason: String,
}

/// Streaming resampler between two fixed rates (an engine's rate to 48 kHz
/// in the worker; 48 kHz to a client's rate in the orchestrator).
///
/// Input is fed in 20 ms chunks (441 samples at 22,050 Hz → exactly 960 out).
/// The FFT resampler delays its output by about
/// [`rubato::Resampler::output_delay`] samples; those leading samples are
/// dropped, and [`finish`](Self::finish)
/// pushes silence through until the output holds exactly
/// `ceil(input × to / from)` samples.
pub struct Resampler {
    fft: Option<Fft<f32>>,
    rate: u32,
    to: u32,
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    to_skip: usize,
    input_total: u64,
    output_total: u64,
    /// Whether the filter's delay is removed (see [`Self::frame_locked`]).
    compensate: bool,
}

impl Resampler {
    /// A resampler from `rate` Hz to `to` Hz; a pass-through when they
    /// are equal.
    pub fn new(rate: u32, to: u32) -> Result<Self, ResampleError> {
        let fft = if rate == to {
            None
        } else {
            let err = |reason: String| ResampleError {
                from: rate,
                to,
                reason,
            };
            if rate == 0 || to == 0 {
                return Err(err("a rate of 0 Hz".into()));
            }
            let g = gcd(rate, to);
            let step = (rate / g) as usize;
            // About 20 ms of input, a whole number of ratio steps.
            let chunk = step * ((rate as usize / 50).div_ceil(step)).max(1);
            Some(
                Fft::new(rate as usize, to as usize, chunk, 1, FixedSync::Both)
                    .map_err(|e| err(e.to_string()))?,
            )
        };
        let mut r = Self {
            fft,
            rate,
            to,
            pending: Vec::new(),
            chunk_out: Vec::new(),
            to_skip: 0,
            input_total: 0,
            output_total: 0,
            compensate: true,
        };
        r.reset();
        Ok(r)
    }

    /// A resampler that turns every 20 ms of input into 20 ms of output at
    /// once, for converting a stream frame by frame: its output keeps the
    /// filter's delay (half a frame when downsampling from 48 kHz) instead
    /// of holding samples back to remove it. `rate` and `to` must both be
    /// multiples of 50 Hz; feed it whole frames and never call `finish`.
    pub fn frame_locked(rate: u32, to: u32) -> Result<Self, ResampleError> {
        let mut r = Self::new(rate, to)?;
        r.compensate = false;
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
            // Upsampled output lines up with the input one sample before
            // the reported delay, downsampled output at it (checked by
            // `resampling_preserves_the_signal_without_delay` and
            // `downsampling_to_each_client_rate_is_exact_and_in_phase`).
            let early = usize::from(self.to > self.rate);
            self.to_skip = if self.compensate {
                fft.output_delay().saturating_sub(early)
            } else {
                0
            };
            self.chunk_out.resize(fft.output_frames_max(), 0.0);
        }
    }

    /// Output samples a request of `input` samples produces in all.
    pub fn output_len(&self, input: u64) -> u64 {
        (input * u64::from(self.to)).div_ceil(u64::from(self.rate))
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
        let mut r = Resampler::new(22_050, 48_000).expect("resampler");
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
        let mut r = Resampler::new(22_050, 48_000).expect("resampler");
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
        let mut r = Resampler::new(48_000, 48_000).expect("resampler");
        let mut out = Vec::new();
        r.process(&[0.1, 0.2, 0.3], &mut out);
        r.finish(&mut out);
        assert_eq!(out, vec![0.1, 0.2, 0.3]);
    }

    #[test]
    fn a_frame_locked_resampler_gives_one_frame_per_frame() {
        let mut r = Resampler::frame_locked(48_000, 16_000).expect("resampler");
        let input = sine(48_000, 440.0, 9_600);
        for (i, frame) in input.chunks(960).enumerate() {
            let mut out = Vec::new();
            r.process(frame, &mut out);
            assert_eq!(out.len(), 320, "frame {i}");
        }
    }

    #[test]
    fn downsampling_to_each_client_rate_is_exact_and_in_phase() {
        for to in [8_000u32, 16_000, 24_000] {
            let mut r = Resampler::new(48_000, to).expect("resampler");
            let input = sine(48_000, 440.0, 48_000);
            let mut out = Vec::new();
            for piece in input.chunks(960) {
                r.process(piece, &mut out);
            }
            r.finish(&mut out);
            assert_eq!(out.len(), to as usize, "{to} Hz");
            let reference = sine(to, 440.0, out.len());
            let worst = (400..out.len() - 400)
                .map(|i| (out[i] - reference[i]).abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.01, "{to} Hz: max deviation {worst}");
        }
    }
}
