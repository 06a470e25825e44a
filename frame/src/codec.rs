//! The binary WebSocket frame: a 40-byte little-endian header, then the payload.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TTSF` |
//! | 4 | 1 | version = 1 |
//! | 5 | 1 | flags: bit 0 = last frame of the request |
//! | 6 | 2 | header length = 40 |
//! | 8 | 4 | stream id |
//! | 12 | 4 | sequence number |
//! | 16 | 4 | CRC-32C of the payload |
//! | 20 | 4 | payload length: 1920 for the pipeline's 48 kHz PCM; 1 to 1920 in the format a client asked for |
//! | 24 | 8 | worker timestamp, µs since the Unix epoch |
//! | 32 | 8 | orchestrator timestamp, µs since the Unix epoch |

use crate::PAYLOAD_BYTES;

/// ASCII `TTSF`.
const MAGIC: [u8; 4] = *b"TTSF";
const VERSION: u8 = 1;
const FLAG_LAST: u8 = 0x01;

/// A malformed binary frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than a header.
    #[error("frame is {actual} bytes, shorter than the {expected}-byte header")]
    TooShort {
        /// Header length.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The first four bytes are not `TTSF`.
    #[error("bad magic {actual:02x?}, expected \"TTSF\"")]
    BadMagic {
        /// The bytes found.
        actual: [u8; 4],
    },
    /// A version this code does not speak.
    #[error("unsupported frame version {actual}, expected {expected}")]
    Version {
        /// The version this code writes.
        expected: u8,
        /// The version found.
        actual: u8,
    },
    /// The header-length field is not 40.
    #[error("header length field is {actual}, expected {expected}")]
    HeaderLength {
        /// 40.
        expected: u16,
        /// The value found.
        actual: u16,
    },
    /// The payload-length field is 0 or over 1920, or the bytes that follow
    /// the header are not as many as it says.
    #[error("payload is {actual} bytes, expected {expected}")]
    PayloadLength {
        /// The length field's value (1920 when the field itself is out of range).
        expected: usize,
        /// The length found.
        actual: usize,
    },
}

/// The fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    /// Identifies the request within its WebSocket connection.
    pub stream_id: u32,
    /// 0 for the first frame of a request, +1 per frame.
    pub sequence: u32,
    /// CRC-32C of the payload, computed by the worker.
    pub crc32c: u32,
    /// Set on the last frame of the request.
    pub last: bool,
    /// When the worker emitted the frame, µs since the Unix epoch.
    pub worker_ts_us: u64,
    /// When the orchestrator sent the frame, µs since the Unix epoch.
    pub orchestrator_ts_us: u64,
}

impl FrameHeader {
    /// Length of the encoded header in bytes.
    pub const LEN: usize = 40;

    /// Encodes the header of a full 48 kHz PCM frame into its 40 wire bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        self.encode_for(PAYLOAD_BYTES)
    }

    /// Encodes the header of a frame whose payload is `payload_len` bytes.
    pub fn encode_for(&self, payload_len: usize) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = if self.last { FLAG_LAST } else { 0 };
        b[6..8].copy_from_slice(&(Self::LEN as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.stream_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.sequence.to_le_bytes());
        b[16..20].copy_from_slice(&self.crc32c.to_le_bytes());
        b[20..24].copy_from_slice(&(payload_len as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.worker_ts_us.to_le_bytes());
        b[32..40].copy_from_slice(&self.orchestrator_ts_us.to_le_bytes());
        b
    }

    /// Decodes and checks a header (magic, version, lengths) and returns it
    /// with its payload length (1 to `PAYLOAD_BYTES`), which is not checked
    /// against the buffer here.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), CodecError> {
        let Some(b) = buf.first_chunk::<{ Self::LEN }>() else {
            return Err(CodecError::TooShort {
                expected: Self::LEN,
                actual: buf.len(),
            });
        };
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(CodecError::BadMagic { actual: magic });
        }
        if b[4] != VERSION {
            return Err(CodecError::Version {
                expected: VERSION,
                actual: b[4],
            });
        }
        let header_len = u16::from_le_bytes([b[6], b[7]]);
        if usize::from(header_len) != Self::LEN {
            return Err(CodecError::HeaderLength {
                expected: Self::LEN as u16,
                actual: header_len,
            });
        }
        let payload_len = u32_at(b, 20) as usize;
        if payload_len == 0 || payload_len > PAYLOAD_BYTES {
            return Err(CodecError::PayloadLength {
                expected: PAYLOAD_BYTES,
                actual: payload_len,
            });
        }
        let header = Self {
            last: b[5] & FLAG_LAST != 0,
            stream_id: u32_at(b, 8),
            sequence: u32_at(b, 12),
            crc32c: u32_at(b, 16),
            worker_ts_us: u64_at(b, 24),
            orchestrator_ts_us: u64_at(b, 32),
        };
        Ok((header, payload_len))
    }
}

fn u32_at(b: &[u8; FrameHeader::LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; FrameHeader::LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Appends header and payload to `out` (cleared first), ready to send as one
/// binary WebSocket message. Reusing `out` keeps the hot path allocation-free.
pub fn encode_frame(header: &FrameHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&header.encode_for(payload.len()));
    out.extend_from_slice(payload);
}

/// Splits a binary message into its checked header and its payload, which
/// must be as long as the header says. Whether that length suits the
/// stream's format, and the checksum, are [`crate::Validator`]'s checks, so
/// that they are counted with the others.
pub fn decode_frame(buf: &[u8]) -> Result<(FrameHeader, &[u8]), CodecError> {
    let (header, expected) = FrameHeader::decode(buf)?;
    let payload = &buf[FrameHeader::LEN..];
    if payload.len() != expected {
        return Err(CodecError::PayloadLength {
            expected,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header() -> FrameHeader {
        FrameHeader {
            stream_id: 7,
            sequence: 42,
            crc32c: 0xDEAD_BEEF,
            last: true,
            worker_ts_us: 1_700_000_000_000_001,
            orchestrator_ts_us: 1_700_000_000_000_999,
        }
    }

    #[test]
    fn header_layout_matches_the_protocol_table() {
        let b = sample_header().encode();
        assert_eq!(&b[0..4], b"TTSF");
        assert_eq!(b[4], 1, "version");
        assert_eq!(b[5], 1, "last flag");
        assert_eq!(&b[6..8], &40u16.to_le_bytes());
        assert_eq!(&b[8..12], &7u32.to_le_bytes());
        assert_eq!(&b[12..16], &42u32.to_le_bytes());
        assert_eq!(&b[16..20], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(&b[20..24], &1920u32.to_le_bytes());
        assert_eq!(&b[24..32], &1_700_000_000_000_001u64.to_le_bytes());
        assert_eq!(&b[32..40], &1_700_000_000_000_999u64.to_le_bytes());
    }

    #[test]
    fn frame_round_trips() {
        let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode_frame(&sample_header(), &payload, &mut wire);
        assert_eq!(wire.len(), 40 + 1920);
        let (header, body) = decode_frame(&wire).expect("valid frame");
        assert_eq!(header, sample_header());
        assert_eq!(body, &payload[..]);
    }

    #[test]
    fn each_malformation_is_named() {
        let payload = vec![0u8; PAYLOAD_BYTES];
        let mut wire = Vec::new();
        encode_frame(&sample_header(), &payload, &mut wire);

        assert_eq!(
            decode_frame(&wire[..39]),
            Err(CodecError::TooShort {
                expected: 40,
                actual: 39
            })
        );
        assert_eq!(
            decode_frame(&wire[..wire.len() - 2]),
            Err(CodecError::PayloadLength {
                expected: 1920,
                actual: 1918
            })
        );
        let mut bad = wire.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_frame(&bad),
            Err(CodecError::BadMagic { .. })
        ));
        let mut bad = wire.clone();
        bad[4] = 2;
        assert_eq!(
            decode_frame(&bad),
            Err(CodecError::Version {
                expected: 1,
                actual: 2
            })
        );
        let mut bad = wire.clone();
        bad[6] = 41;
        assert!(matches!(
            decode_frame(&bad),
            Err(CodecError::HeaderLength { actual: 41, .. })
        ));
        let mut bad = wire.clone();
        bad[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            decode_frame(&bad),
            Err(CodecError::PayloadLength {
                expected: 1000,
                actual: 1920
            })
        );
        for out_of_range in [0u32, 1921, u32::MAX] {
            let mut bad = wire.clone();
            bad[20..24].copy_from_slice(&out_of_range.to_le_bytes());
            assert!(
                matches!(decode_frame(&bad), Err(CodecError::PayloadLength { actual, .. })
                    if actual == out_of_range as usize),
                "{out_of_range}"
            );
        }
    }

    #[test]
    fn a_shorter_payload_carries_its_own_length() {
        let payload = vec![0x55u8; 160];
        let mut wire = Vec::new();
        encode_frame(&sample_header(), &payload, &mut wire);
        assert_eq!(&wire[20..24], &160u32.to_le_bytes());
        let (header, body) = decode_frame(&wire).expect("valid frame");
        assert_eq!((header, body), (sample_header(), &payload[..]));
    }
}
