//! Checking one stream's frames in order ([`Validator`]: size, sequence,
//! checksum, then quality) and counting what was found ([`Tally`]).

use crate::checksum;
use crate::format::{Encoding, Format, MAX_OPUS_PACKET, mulaw_to_pcm};
use crate::quality::{Events, FrameError, Monitor, QualityEvent, QualityStats, analyse};

/// Checks the frames of one stream in order: size, contiguous sequence from
/// 0, checksum, then quality.
#[derive(Debug, Default)]
pub struct Validator {
    next_sequence: u32,
    format: Format,
}

impl Validator {
    /// A validator of 48 kHz PCM frames expecting sequence 0 next.
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator of frames in `format`.
    pub fn for_format(format: Format) -> Self {
        Self {
            next_sequence: 0,
            format,
        }
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
        self.check_bytes(sequence, crc32c, payload)?;
        Ok(match self.format.encoding {
            Encoding::PcmS16le => analyse(payload),
            Encoding::Mulaw => {
                let mut pcm = Vec::with_capacity(payload.len() * 2);
                mulaw_to_pcm(payload, &mut pcm);
                analyse(&pcm)
            }
            // Measured on the decoded audio by whoever decodes it.
            Encoding::Opus => QualityStats::UNMEASURED,
        })
    }

    /// The checks on the bytes alone (size for the format, sequence,
    /// checksum), for a caller that measures the decoded audio itself.
    pub fn check_bytes(
        &mut self,
        sequence: u32,
        crc32c: u32,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        if !self.format.fits(payload.len()) {
            return Err(FrameError::BadSize {
                expected: self.format.payload_bytes().unwrap_or(MAX_OPUS_PACKET),
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
        Ok(())
    }
}

/// One stream's counts: frame outcomes and quality events.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Frames that passed size, sequence and checksum.
    pub ok: u64,
    /// Frames whose payload was not 1920 bytes (or whose header was malformed).
    pub bad_size: u64,
    /// Frames out of sequence.
    pub out_of_sequence: u64,
    /// Frames whose checksum did not match.
    pub checksum_mismatch: u64,
    /// Frames with a flat top at full scale (`clipping` events).
    pub clipping: u64,
    /// Silent frames (pauses included: for information, not an event).
    pub silence: u64,
    /// `dc_offset` events.
    pub dc_offset: u64,
    /// `dead_air` events.
    pub dead_air: u64,
    /// `leading_silence` events (0 or 1).
    pub leading_silence: u64,
    monitor: Monitor,
}

impl Tally {
    /// A tally whose dead-air limit is `ms` milliseconds.
    pub fn with_dead_air_ms(ms: u32) -> Self {
        Self {
            monitor: Monitor::with_dead_air_ms(ms),
            ..Self::default()
        }
    }

    /// Adds one validation outcome; returns the quality events it raised.
    pub fn record(&mut self, outcome: &Result<QualityStats, FrameError>) -> Events {
        match outcome {
            Ok(stats) if stats.samples == 0 => self.ok += 1,
            Ok(stats) => {
                self.ok += 1;
                self.silence += u64::from(stats.quality().silence);
                let events = self.monitor.observe(stats);
                for e in events.iter() {
                    *match e {
                        QualityEvent::Clipping => &mut self.clipping,
                        QualityEvent::DcOffset => &mut self.dc_offset,
                        QualityEvent::DeadAir => &mut self.dead_air,
                        QualityEvent::LeadingSilence => &mut self.leading_silence,
                    } += 1;
                }
                return events;
            }
            Err(FrameError::BadSize { .. }) => self.bad_size += 1,
            Err(FrameError::OutOfSequence { .. }) => self.out_of_sequence += 1,
            Err(FrameError::ChecksumMismatch { .. }) => self.checksum_mismatch += 1,
        }
        Events::default()
    }

    /// Quality events raised so far, all kinds.
    pub fn quality_events(&self) -> u64 {
        self.clipping + self.dc_offset + self.dead_air + self.leading_silence
    }

    /// Frames that failed size, sequence or checksum.
    pub fn errors(&self) -> u64 {
        self.bad_size + self.out_of_sequence + self.checksum_mismatch
    }
}
