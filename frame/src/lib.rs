//! The audio frame every hop speaks: 20 ms of 48 kHz mono s16le (960 samples,
//! 1,920 bytes), its 40-byte wire header, its CRC-32C, and the checks each hop
//! runs on it (size, sequence, checksum) and on its stream (clipping, DC
//! offset, dead air, leading silence).
//!
//! Nothing here allocates on the per-frame path: encoding writes into a
//! caller's buffer, decoding borrows the payload, analysis walks the bytes once.

mod codec;
mod format;
mod quality;
mod resample;
mod validate;

pub use codec::{CodecError, FrameHeader, decode_frame, encode_frame};
pub use format::{
    CLIENT_RATES, Encoding, Format, FormatError, MAX_OPUS_PACKET, mulaw_decode, mulaw_encode,
    mulaw_to_pcm, pcm_to_mulaw,
};
pub use quality::{
    CLIP_RUN, DC_LIMIT, DEAD_AIR_MS, Events, FrameError, LEADING_SILENCE_MS, Monitor, Quality,
    QualityEvent, QualityStats, SILENCE_MAGNITUDE, analyse,
};
pub use resample::{ResampleError, Resampler};
pub use validate::{Tally, Validator};

/// Output sample rate of the whole pipeline, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one frame: 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Bytes of payload in one frame: 960 signed 16-bit little-endian samples.
pub const PAYLOAD_BYTES: usize = FRAME_SAMPLES * 2;
/// Duration of one frame in milliseconds.
pub const FRAME_MS: u32 = 20;

/// CRC-32C (Castagnoli) of a payload, as carried in the frame header.
pub fn checksum(payload: &[u8]) -> u32 {
    crc32c::crc32c(payload)
}

/// Writes `samples` as little-endian bytes into `out`, which must hold
/// exactly two bytes per sample.
pub fn samples_to_bytes(samples: &[i16], out: &mut [u8]) {
    debug_assert_eq!(out.len(), samples.len() * 2);
    for (chunk, sample) in out.chunks_exact_mut(2).zip(samples) {
        chunk.copy_from_slice(&sample.to_le_bytes());
    }
}

/// Iterates the samples of a little-endian s16 payload.
pub fn bytes_to_samples(payload: &[u8]) -> impl Iterator<Item = i16> + '_ {
    payload
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
}

/// Microseconds since the Unix epoch, the unit of every frame timestamp.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        // The standard check value of CRC-32C; CRC-32 (IEEE) gives 0xCBF43926.
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn samples_round_trip_through_bytes() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 1234];
        let mut bytes = [0u8; 12];
        samples_to_bytes(&samples, &mut bytes);
        assert_eq!(&bytes[..4], &[0, 0, 1, 0]);
        let back: Vec<i16> = bytes_to_samples(&bytes).collect();
        assert_eq!(back, samples);
    }
}
