//! Per-frame checks. Size, sequence and checksum failures are errors: the
//! request they belong to cannot be trusted. Clipping, silence and DC offset
//! are quality warnings: the audio is delivered, and the warning is counted.

use crate::{PAYLOAD_BYTES, bytes_to_samples, checksum};

/// More than this fraction of samples at full scale is clipping.
const CLIP_FRACTION: f64 = 0.01;
/// A frame whose every sample is below this magnitude is silent.
const SILENCE_MAGNITUDE: i32 = 100;
/// A frame whose mean is beyond ± this value has a DC offset.
const DC_LIMIT: f64 = 100.0;

/// A frame that must not be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is not 1920 bytes.
    #[error("payload is {actual} bytes, expected {expected}")]
    BadSize {
        /// 1920.
        expected: usize,
        /// Bytes found.
        actual: usize,
    },
    /// The sequence number is not the one after the previous frame's.
    #[error("sequence {actual}, expected {expected}")]
    OutOfSequence {
        /// The next contiguous sequence number.
        expected: u32,
        /// The number found.
        actual: u32,
    },
    /// The payload's CRC-32C differs from the header's.
    #[error("checksum {actual:#010x}, header says {expected:#010x}")]
    ChecksumMismatch {
        /// CRC-32C carried in the header.
        expected: u32,
        /// CRC-32C of the payload received.
        actual: u32,
    },
}

impl FrameError {
    /// A short, stable name for counting: `bad_size`, `out_of_sequence`,
    /// `checksum_mismatch`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadSize { .. } => "bad_size",
            Self::OutOfSequence { .. } => "out_of_sequence",
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
        }
    }
}

/// Level statistics of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityStats {
    /// RMS level relative to full scale, in dB (−inf for digital silence).
    pub rms_dbfs: f64,
    /// Largest sample magnitude.
    pub peak: u16,
    /// Samples at ±32767 or −32768.
    pub clipped_samples: usize,
    /// Mean sample value (the DC offset).
    pub mean: f64,
    /// Samples analysed.
    pub samples: usize,
}

/// The quality warnings a frame raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quality {
    /// More than 1 % of samples at full scale.
    pub clipping: bool,
    /// Every sample below 100 in magnitude.
    pub silence: bool,
    /// Mean beyond ±100.
    pub dc_offset: bool,
}

impl Quality {
    /// The names of the warnings raised (`clipping`, `silence`,
    /// `dc_offset`), as counted in metrics.
    pub fn kinds(self) -> impl Iterator<Item = &'static str> {
        [
            (self.clipping, "clipping"),
            (self.silence, "silence"),
            (self.dc_offset, "dc_offset"),
        ]
        .into_iter()
        .filter_map(|(raised, kind)| raised.then_some(kind))
    }
}

impl QualityStats {
    /// The warnings these statistics raise.
    pub fn quality(&self) -> Quality {
        Quality {
            clipping: self.samples > 0
                && self.clipped_samples as f64 > CLIP_FRACTION * self.samples as f64,
            silence: i32::from(self.peak) < SILENCE_MAGNITUDE,
            dc_offset: self.mean.abs() > DC_LIMIT,
        }
    }
}

/// Walks a little-endian s16 payload once and measures it.
pub fn analyse(payload: &[u8]) -> QualityStats {
    let mut sum = 0i64;
    let mut sum_sq = 0f64;
    let mut peak = 0u16;
    let mut clipped = 0usize;
    let mut n = 0usize;
    for s in bytes_to_samples(payload) {
        let magnitude = s.unsigned_abs();
        peak = peak.max(magnitude);
        if magnitude >= i16::MAX as u16 {
            clipped += 1;
        }
        sum += i64::from(s);
        sum_sq += f64::from(s) * f64::from(s);
        n += 1;
    }
    let (mean, rms) = if n == 0 {
        (0.0, 0.0)
    } else {
        (sum as f64 / n as f64, (sum_sq / n as f64).sqrt())
    };
    QualityStats {
        rms_dbfs: 20.0 * (rms / f64::from(i16::MAX)).log10(),
        peak,
        clipped_samples: clipped,
        mean,
        samples: n,
    }
}

/// Checks the frames of one stream in order: size, contiguous sequence from
/// 0, checksum, then quality.
#[derive(Debug, Default)]
pub struct Validator {
    next_sequence: u32,
}

impl Validator {
    /// A validator expecting sequence 0 next.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number the next frame must carry.
    pub fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// Checks one frame. On an out-of-sequence frame the expectation moves to
    /// follow it, so a single gap is reported once rather than on every
    /// later frame.
    pub fn check(
        &mut self,
        sequence: u32,
        crc32c: u32,
        payload: &[u8],
    ) -> Result<QualityStats, FrameError> {
        if payload.len() != PAYLOAD_BYTES {
            return Err(FrameError::BadSize {
                expected: PAYLOAD_BYTES,
                actual: payload.len(),
            });
        }
        let expected = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        if sequence != expected {
            return Err(FrameError::OutOfSequence {
                expected,
                actual: sequence,
            });
        }
        let actual = checksum(payload);
        if actual != crc32c {
            return Err(FrameError::ChecksumMismatch {
                expected: crc32c,
                actual,
            });
        }
        Ok(analyse(payload))
    }
}

/// Counts of frame outcomes, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Frames that passed size, sequence and checksum.
    pub ok: u64,
    /// Frames whose payload was not 1920 bytes (or whose header was malformed).
    pub bad_size: u64,
    /// Frames out of sequence.
    pub out_of_sequence: u64,
    /// Frames whose checksum did not match.
    pub checksum_mismatch: u64,
    /// Good frames with clipping.
    pub clipping: u64,
    /// Good frames that were silent.
    pub silence: u64,
    /// Good frames with a DC offset.
    pub dc_offset: u64,
}

impl Tally {
    /// Adds one validation outcome.
    pub fn record(&mut self, outcome: &Result<QualityStats, FrameError>) {
        match outcome {
            Ok(stats) => {
                self.ok += 1;
                let q = stats.quality();
                self.clipping += u64::from(q.clipping);
                self.silence += u64::from(q.silence);
                self.dc_offset += u64::from(q.dc_offset);
            }
            Err(FrameError::BadSize { .. }) => self.bad_size += 1,
            Err(FrameError::OutOfSequence { .. }) => self.out_of_sequence += 1,
            Err(FrameError::ChecksumMismatch { .. }) => self.checksum_mismatch += 1,
        }
    }

    /// Frames that failed size, sequence or checksum.
    pub fn errors(&self) -> u64 {
        self.bad_size + self.out_of_sequence + self.checksum_mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FRAME_SAMPLES, samples_to_bytes};

    fn payload(f: impl Fn(usize) -> i16) -> Vec<u8> {
        let samples: Vec<i16> = (0..FRAME_SAMPLES).map(f).collect();
        let mut bytes = vec![0u8; PAYLOAD_BYTES];
        samples_to_bytes(&samples, &mut bytes);
        bytes
    }

    fn speech_like(i: usize) -> i16 {
        // 400 Hz: exactly eight cycles per frame, so the mean is zero.
        ((i as f64 * std::f64::consts::TAU * 8.0 / FRAME_SAMPLES as f64).sin() * 8000.0) as i16
    }

    #[test]
    fn a_good_frame_raises_no_warning() {
        let stats = analyse(&payload(speech_like));
        assert_eq!(stats.quality(), Quality::default(), "{stats:?}");
        assert!(stats.mean.abs() < 100.0);
        // A full-cycle sine of amplitude A has RMS A/sqrt(2): 8000 → 20·log10(5657/32767) = −15.26 dBFS.
        assert!(
            (stats.rms_dbfs - (-15.26)).abs() < 0.05,
            "rms {}",
            stats.rms_dbfs
        );
    }

    #[test]
    fn clipping_is_more_than_one_percent_at_full_scale() {
        // 9 of 960 samples (0.94 %) is not clipping; 10 (1.04 %) is.
        let nine = analyse(&payload(|i| if i < 9 { i16::MAX } else { speech_like(i) }));
        assert!(!nine.quality().clipping, "{nine:?}");
        let ten = analyse(&payload(|i| if i < 10 { i16::MIN } else { speech_like(i) }));
        assert!(ten.quality().clipping, "{ten:?}");
        assert_eq!(ten.clipped_samples, 10);
        // Ten samples at −32768 also shift the mean beyond −100.
        assert_eq!(
            ten.quality().kinds().collect::<Vec<_>>(),
            ["clipping", "dc_offset"]
        );
    }

    #[test]
    fn silence_is_every_sample_below_100() {
        let quiet = analyse(&payload(|i| if i % 2 == 0 { 99 } else { -99 }));
        assert!(quiet.quality().silence);
        let one_loud = analyse(&payload(|i| if i == 500 { 100 } else { 0 }));
        assert!(!one_loud.quality().silence);
        assert_eq!(analyse(&payload(|_| 0)).rms_dbfs, f64::NEG_INFINITY);
    }

    #[test]
    fn dc_offset_is_a_mean_beyond_100() {
        let offset = analyse(&payload(|i| speech_like(i).saturating_add(150)));
        assert!(offset.quality().dc_offset, "{offset:?}");
        let negative = analyse(&payload(|i| speech_like(i).saturating_sub(150)));
        assert!(negative.quality().dc_offset);
        assert!(!negative.quality().clipping);
    }

    #[test]
    fn validator_reports_size_sequence_and_checksum() {
        let good = payload(speech_like);
        let crc = checksum(&good);
        let mut v = Validator::new();
        assert!(v.check(0, crc, &good).is_ok());
        assert_eq!(
            v.check(1, crc, &good[..100]),
            Err(FrameError::BadSize {
                expected: 1920,
                actual: 100
            })
        );
        assert!(v.check(1, crc, &good).is_ok());
        assert_eq!(
            v.check(3, crc, &good),
            Err(FrameError::OutOfSequence {
                expected: 2,
                actual: 3
            })
        );
        // The gap is reported once; the stream continues from 4.
        assert!(v.check(4, crc, &good).is_ok());
        let mut corrupted = good.clone();
        corrupted[77] ^= 0x01;
        let err = v.check(5, crc, &corrupted).expect_err("corrupted");
        assert_eq!(err.kind(), "checksum_mismatch");
    }

    #[test]
    fn tally_counts_each_outcome() {
        let mut t = Tally::default();
        t.record(&Ok(analyse(&payload(speech_like))));
        t.record(&Ok(analyse(&payload(|_| 0))));
        t.record(&Err(FrameError::ChecksumMismatch {
            expected: 1,
            actual: 2,
        }));
        assert_eq!(t.ok, 2);
        assert_eq!(t.silence, 1);
        assert_eq!(t.checksum_mismatch, 1);
        assert_eq!(t.errors(), 1);
    }
}
