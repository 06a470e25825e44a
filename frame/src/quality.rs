//! Checks on frames. Size, sequence and checksum failures are errors: the
//! request they belong to cannot be trusted. Quality problems are events
//! raised by a stream's [`Monitor`]: the audio is delivered, and the event
//! is counted. Each threshold is set from clean speech of the Piper voice
//! (973 frames of several sentences), so that healthy audio raises none:
//!
//! | event | raised when | why this threshold |
//! |---|---|---|
//! | `clipping` | a frame holds a run of [`CLIP_RUN`] or more consecutive samples at full scale | a single peak at ±32767 is legal; a flat top is distortion. The worker's limiter never reaches full scale (clean peak 32,747) |
//! | `dc_offset` | the stream's mean, followed by a one-pole tracker with a 1 s time constant, goes beyond ±[`DC_LIMIT`] (once, until it falls below half of that) | voiced speech has a large mean over 20 ms (232 of 973 clean frames beyond ±100) but not over a second (clean: at most ±28); a real offset of +2000 crosses in 0.3 s |
//! | `dead_air` | a run of silent frames (every sample below [`SILENCE_MAGNITUDE`]) lasts longer than the dead-air limit, 500 ms by default | the pauses between words and sentences are silence by design (clean: at most 300 ms); a dropout of 800 ms is not |
//! | `leading_silence` | the stream's first voiced frame comes more than [`LEADING_SILENCE_MS`] after its start | silence before the first sound adds to the time to first audio (clean: 40 ms) |

use crate::{FRAME_MS, bytes_to_samples};

/// A frame with this many consecutive samples at full scale is clipped.
pub const CLIP_RUN: usize = 3;
/// A frame whose every sample is below this magnitude is silent.
pub const SILENCE_MAGNITUDE: i32 = 100;
/// The stream's tracked mean beyond ± this value is a DC offset.
pub const DC_LIMIT: f64 = 300.0;
/// Time constant of the DC tracker, seconds.
const DC_TIME_CONSTANT: f64 = 1.0;
/// Silence longer than this before the first voiced frame is an event.
pub const LEADING_SILENCE_MS: u32 = 250;
/// Silence longer than this inside a stream is dead air, by default.
pub const DEAD_AIR_MS: u32 = 500;

/// A frame that must not be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is not 1920 bytes.
    #[error("payload is {actual} bytes, expected {expected}")]
    BadSize {
        /// The format's size (the largest Opus packet for Opus).
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
    /// The longest run of consecutive samples at full scale.
    pub longest_clip_run: usize,
    /// Mean sample value (the DC offset).
    pub mean: f64,
    /// Samples analysed.
    pub samples: usize,
}

/// What one frame shows on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quality {
    /// A run of [`CLIP_RUN`] or more samples at full scale.
    pub clipping: bool,
    /// Every sample below [`SILENCE_MAGNITUDE`] in magnitude.
    pub silence: bool,
}

impl QualityStats {
    /// A frame whose audio was not measured (an Opus packet before
    /// decoding): counted as received, not observed for quality.
    pub const UNMEASURED: Self = Self {
        rms_dbfs: f64::NEG_INFINITY,
        peak: 0,
        clipped_samples: 0,
        longest_clip_run: 0,
        mean: 0.0,
        samples: 0,
    };

    /// What the frame shows on its own.
    pub fn quality(&self) -> Quality {
        Quality {
            clipping: self.longest_clip_run >= CLIP_RUN,
            silence: i32::from(self.peak) < SILENCE_MAGNITUDE,
        }
    }
}

/// A quality problem in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityEvent {
    /// A frame with a flat top at full scale.
    Clipping,
    /// The stream's mean has moved away from zero.
    DcOffset,
    /// Silence inside the stream for longer than the dead-air limit.
    DeadAir,
    /// Silence before the first sound for longer than [`LEADING_SILENCE_MS`].
    LeadingSilence,
}

impl QualityEvent {
    /// Every kind, for creating metric series at start-up.
    pub const ALL: [Self; 4] = [
        Self::Clipping,
        Self::DcOffset,
        Self::DeadAir,
        Self::LeadingSilence,
    ];

    /// The name counted in metrics (`kind` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clipping => "clipping",
            Self::DcOffset => "dc_offset",
            Self::DeadAir => "dead_air",
            Self::LeadingSilence => "leading_silence",
        }
    }
}

/// Follows one stream's frames and raises [`QualityEvent`]s.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The mean followed with a one-pole tracker.
    dc: f64,
    dc_raised: bool,
    /// Silent frames in the current run.
    silent_run: u32,
    dead_air_raised: bool,
    dead_air_frames: u32,
    voiced: bool,
    leading_raised: bool,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::with_dead_air_ms(DEAD_AIR_MS)
    }
}

impl Monitor {
    /// A monitor whose dead-air limit is `ms` milliseconds.
    pub fn with_dead_air_ms(ms: u32) -> Self {
        Self {
            dc: 0.0,
            dc_raised: false,
            silent_run: 0,
            dead_air_raised: false,
            dead_air_frames: ms / FRAME_MS,
            voiced: false,
            leading_raised: false,
        }
    }

    /// Takes the next frame's statistics; returns the events it raises.
    pub fn observe(&mut self, stats: &QualityStats) -> Events {
        let mut events = Events::default();
        let q = stats.quality();
        if q.clipping {
            events.add(QualityEvent::Clipping);
        }
        // One pole per frame: keep exp(−frame/τ) of the past.
        let keep = (-f64::from(FRAME_MS) / 1000.0 / DC_TIME_CONSTANT).exp();
        self.dc = self.dc * keep + stats.mean * (1.0 - keep);
        if !self.dc_raised && self.dc.abs() > DC_LIMIT {
            self.dc_raised = true;
            events.add(QualityEvent::DcOffset);
        } else if self.dc_raised && self.dc.abs() < DC_LIMIT / 2.0 {
            self.dc_raised = false;
        }
        if q.silence {
            self.silent_run += 1;
            if !self.voiced
                && !self.leading_raised
                && self.silent_run * FRAME_MS > LEADING_SILENCE_MS
            {
                self.leading_raised = true;
                events.add(QualityEvent::LeadingSilence);
            }
            if !self.dead_air_raised && self.silent_run > self.dead_air_frames {
                self.dead_air_raised = true;
                events.add(QualityEvent::DeadAir);
            }
        } else {
            self.voiced = true;
            self.silent_run = 0;
            self.dead_air_raised = false;
        }
        events
    }
}

/// The events one frame raised (at most one of each kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(u8);

impl Events {
    fn add(&mut self, event: QualityEvent) {
        self.0 |= 1 << event as u8;
    }

    /// Whether `event` was raised.
    pub fn contains(self, event: QualityEvent) -> bool {
        self.0 & (1 << event as u8) != 0
    }

    /// The events raised.
    pub fn iter(self) -> impl Iterator<Item = QualityEvent> {
        QualityEvent::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }

    /// Whether none was raised.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Walks a little-endian s16 payload once and measures it.
pub fn analyse(payload: &[u8]) -> QualityStats {
    let mut sum = 0i64;
    let mut sum_sq = 0f64;
    let mut peak = 0u16;
    let (mut clipped, mut run, mut longest_run) = (0usize, 0usize, 0usize);
    let mut n = 0usize;
    for s in bytes_to_samples(payload) {
        let magnitude = s.unsigned_abs();
        peak = peak.max(magnitude);
        if magnitude >= i16::MAX as u16 {
            clipped += 1;
            run += 1;
            longest_run = longest_run.max(run);
        } else {
            run = 0;
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
        longest_clip_run: longest_run,
        mean,
        samples: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FRAME_SAMPLES, PAYLOAD_BYTES, Tally, Validator, checksum, samples_to_bytes};

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
        assert!(Monitor::default().observe(&stats).is_empty());
        assert!(stats.mean.abs() < 100.0);
        // A full-cycle sine of amplitude A has RMS A/sqrt(2): 8000 → 20·log10(5657/32767) = −15.26 dBFS.
        assert!(
            (stats.rms_dbfs - (-15.26)).abs() < 0.05,
            "rms {}",
            stats.rms_dbfs
        );
    }

    #[test]
    fn clipping_is_a_flat_top_not_a_peak() {
        // Two samples at full scale in a row are peaks; three are a flat top.
        let two = analyse(&payload(|i| {
            if (100..102).contains(&i) {
                i16::MAX
            } else {
                speech_like(i)
            }
        }));
        assert!(!two.quality().clipping, "{two:?}");
        assert_eq!(two.clipped_samples, 2);
        let three = analyse(&payload(|i| {
            if (100..103).contains(&i) {
                i16::MIN
            } else {
                speech_like(i)
            }
        }));
        assert!(three.quality().clipping, "{three:?}");
        assert_eq!(three.longest_clip_run, 3);
        // Scattered full-scale samples are not clipping either.
        let scattered = analyse(&payload(|i| {
            if i % 10 == 0 {
                i16::MAX
            } else {
                speech_like(i)
            }
        }));
        assert!(!scattered.quality().clipping);
    }

    #[test]
    fn silence_is_every_sample_below_100() {
        let quiet = analyse(&payload(|i| if i % 2 == 0 { 99 } else { -99 }));
        assert!(quiet.quality().silence);
        let one_loud = analyse(&payload(|i| if i == 500 { 100 } else { 0 }));
        assert!(!one_loud.quality().silence);
        assert_eq!(analyse(&payload(|_| 0)).rms_dbfs, f64::NEG_INFINITY);
    }

    /// Feeds `n` copies of a frame to `tally`; returns the events raised.
    fn feed(tally: &mut Tally, frame: &[u8], n: usize) -> Vec<QualityEvent> {
        (0..n)
            .flat_map(|_| tally.record(&Ok(analyse(frame))).iter().collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn a_dc_offset_is_the_mean_over_a_second_not_a_frame() {
        // Voiced frames with a large mean each (+600), alternating sign:
        // a 20 ms mean, not an offset.
        let mut t = Tally::default();
        let up = payload(|i| speech_like(i).saturating_add(600));
        let down = payload(|i| speech_like(i).saturating_sub(600));
        for _ in 0..100 {
            feed(&mut t, &up, 1);
            feed(&mut t, &down, 1);
        }
        assert_eq!(t.dc_offset, 0);
        // +2000 for good is raised once, within half a second.
        let offset = payload(|i| speech_like(i).saturating_add(2000));
        let events = feed(&mut t, &offset, 25);
        assert_eq!(events, [QualityEvent::DcOffset]);
        feed(&mut t, &offset, 200);
        assert_eq!(t.dc_offset, 1, "raised once while it lasts");
    }

    #[test]
    fn dead_air_is_silence_longer_than_the_limit_inside_a_stream() {
        let (voiced, silent) = (payload(speech_like), payload(|_| 0));
        let mut t = Tally::default();
        feed(&mut t, &voiced, 10);
        // Pauses between words and sentences (up to 300 ms) are not dead air.
        for _ in 0..5 {
            feed(&mut t, &silent, 15);
            feed(&mut t, &voiced, 10);
        }
        assert_eq!(t.dead_air, 0);
        // An 800 ms dropout is, once.
        let events = feed(&mut t, &silent, 40);
        assert_eq!(events, [QualityEvent::DeadAir]);
        feed(&mut t, &voiced, 1);
        assert_eq!(t.quality_events(), 1);
        assert_eq!(t.silence, 75 + 40);
    }

    #[test]
    fn leading_silence_longer_than_250_ms_is_raised_once() {
        let (voiced, silent) = (payload(speech_like), payload(|_| 0));
        let mut short = Tally::default();
        feed(&mut short, &silent, 12);
        feed(&mut short, &voiced, 5);
        assert_eq!(short.leading_silence, 0, "240 ms");
        let mut long = Tally::default();
        let events = feed(&mut long, &silent, 13);
        assert_eq!(events, [QualityEvent::LeadingSilence], "260 ms");
        feed(&mut long, &voiced, 5);
        feed(&mut long, &silent, 14);
        assert_eq!(long.leading_silence, 1, "only before the first sound");
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
        assert_eq!(t.quality_events(), 0);
    }
}
