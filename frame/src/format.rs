//! What a client's frames carry: the encoding and sample rate it asked for.
//! The worker always speaks 48 kHz s16le ([`Format::PIPELINE`]); the
//! orchestrator converts each verified frame for its client, one frame in,
//! one frame out, so sequence numbers and timestamps are the same at every
//! hop and only the payload (and its CRC-32C) changes.

use crate::{FRAME_MS, bytes_to_samples};

/// How a frame's payload encodes its 20 ms of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM.
    #[default]
    PcmS16le,
    /// G.711 µ-law, one byte per sample (telephony, 8 kHz).
    Mulaw,
    /// One Opus packet (RFC 6716) per frame, 48 kHz mono.
    Opus,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Self; 3] = [Self::PcmS16le, Self::Mulaw, Self::Opus];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::Mulaw => "mulaw",
            Self::Opus => "opus",
        }
    }

    /// Parses a name as it appears on the wire.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// Sample rates a client may ask for, in Hz.
pub const CLIENT_RATES: [u32; 4] = [8_000, 16_000, 24_000, 48_000];

/// The largest Opus packet (RFC 6716 §3.2.1), in bytes.
pub const MAX_OPUS_PACKET: usize = 1275;

/// An encoding at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    /// How the payload is encoded.
    pub encoding: Encoding,
    /// Samples per second, per channel.
    pub sample_rate: u32,
}

/// Why a format cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A rate outside [`CLIENT_RATES`].
    #[error("sample_rate must be one of 8000, 16000, 24000, 48000 (got {0})")]
    Rate(u32),
    /// µ-law at a rate other than 8 kHz.
    #[error("encoding \"mulaw\" is 8000 Hz only (sample_rate {0})")]
    MulawRate(u32),
    /// Opus at a rate other than 48 kHz.
    #[error("encoding \"opus\" is 48000 Hz only (sample_rate {0})")]
    OpusRate(u32),
}

impl Default for Format {
    fn default() -> Self {
        Self::PIPELINE
    }
}

impl Format {
    /// What every hop between worker and orchestrator carries.
    pub const PIPELINE: Self = Self {
        encoding: Encoding::PcmS16le,
        sample_rate: crate::SAMPLE_RATE,
    };

    /// A format from a request's optional fields: the rate defaults to
    /// 8 kHz for µ-law and 48 kHz otherwise; invalid pairs are refused.
    pub fn negotiate(encoding: Encoding, sample_rate: Option<u32>) -> Result<Self, FormatError> {
        let rate = sample_rate.unwrap_or(match encoding {
            Encoding::Mulaw => 8_000,
            _ => crate::SAMPLE_RATE,
        });
        if !CLIENT_RATES.contains(&rate) {
            return Err(FormatError::Rate(rate));
        }
        match encoding {
            Encoding::Mulaw if rate != 8_000 => Err(FormatError::MulawRate(rate)),
            Encoding::Opus if rate != crate::SAMPLE_RATE => Err(FormatError::OpusRate(rate)),
            _ => Ok(Self {
                encoding,
                sample_rate: rate,
            }),
        }
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(self) -> usize {
        (self.sample_rate * FRAME_MS / 1000) as usize
    }

    /// The exact payload size of every frame, for fixed-size encodings;
    /// `None` for Opus, whose packets vary.
    pub fn payload_bytes(self) -> Option<usize> {
        match self.encoding {
            Encoding::PcmS16le => Some(self.frame_samples() * 2),
            Encoding::Mulaw => Some(self.frame_samples()),
            Encoding::Opus => None,
        }
    }

    /// Whether a payload of `len` bytes has this format's size.
    pub fn fits(self, len: usize) -> bool {
        match self.payload_bytes() {
            Some(n) => len == n,
            None => (1..=MAX_OPUS_PACKET).contains(&len),
        }
    }
}

/// G.711 µ-law encoding of one sample (ITU-T G.711, with the 0x84 bias and
/// the clip at 32,635).
pub fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = s.abs().min(CLIP) + BIAS;
    // The position of the highest set bit above bit 7.
    let exponent = (24u32.saturating_sub((magnitude as u32).leading_zeros())).min(7) as i32;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 µ-law decoding of one byte.
pub fn mulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Writes a PCM payload's samples into `out` as µ-law (cleared first).
pub fn pcm_to_mulaw(pcm: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(bytes_to_samples(pcm).map(mulaw_encode));
}

/// Writes a µ-law payload's samples into `out` as s16le PCM (cleared first).
pub fn mulaw_to_pcm(mulaw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for &b in mulaw {
        out.extend_from_slice(&mulaw_decode(b).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_negotiated_with_the_field_named() {
        let f = Format::negotiate(Encoding::Mulaw, None).expect("µ-law");
        assert_eq!((f.sample_rate, f.payload_bytes()), (8_000, Some(160)));
        let f = Format::negotiate(Encoding::PcmS16le, Some(16_000)).expect("16 kHz");
        assert_eq!(f.payload_bytes(), Some(640));
        assert_eq!(Format::default().payload_bytes(), Some(1920));
        assert_eq!(
            Format::negotiate(Encoding::PcmS16le, Some(44_100)),
            Err(FormatError::Rate(44_100))
        );
        assert_eq!(
            Format::negotiate(Encoding::Mulaw, Some(16_000)),
            Err(FormatError::MulawRate(16_000))
        );
        assert_eq!(
            Format::negotiate(Encoding::Opus, Some(24_000)),
            Err(FormatError::OpusRate(24_000))
        );
        let opus = Format::negotiate(Encoding::Opus, None).expect("opus");
        assert!(opus.fits(1) && opus.fits(MAX_OPUS_PACKET) && !opus.fits(0));
    }

    #[test]
    fn mulaw_matches_the_g711_table_and_round_trips_within_its_step() {
        // Reference points of ITU-T G.711 µ-law.
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(-1), 0x7F);
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x80), 32_124);
        assert_eq!(mulaw_decode(0x00), -32_124);
        for s in (-32_000i16..32_000).step_by(97) {
            let back = i32::from(mulaw_decode(mulaw_encode(s)));
            // The quantisation step grows with the level: within 1/16 of it.
            let tolerance = (i32::from(s).abs() / 16).max(8);
            assert!((back - i32::from(s)).abs() <= tolerance, "{s} → {back}");
        }
    }
}
