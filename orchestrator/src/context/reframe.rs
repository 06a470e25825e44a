//! Re-framing a context's clauses: their audio joined sample-exactly into
//! 20 ms frames of the context's own, so no padding falls at a clause
//! boundary.

use bytes::Bytes;
use tts_frame::PAYLOAD_BYTES;

/// Joins the clauses' 48 kHz s16le audio into whole 20 ms payloads.
#[derive(Debug, Default)]
pub(super) struct Reframer {
    /// Bytes of the frame in progress (fewer than a payload).
    carry: Vec<u8>,
}

impl Reframer {
    /// Adds a clause frame's real samples; whole payloads go to `out`.
    pub(super) fn push(&mut self, pcm: &[u8], samples: usize, out: &mut Vec<Bytes>) {
        let real = (samples * 2).min(pcm.len());
        self.carry.extend_from_slice(&pcm[..real]);
        while self.carry.len() >= PAYLOAD_BYTES {
            out.push(Bytes::copy_from_slice(&self.carry[..PAYLOAD_BYTES]));
            self.carry.drain(..PAYLOAD_BYTES);
        }
    }

    /// Samples waiting for the next whole payload.
    pub(super) fn pending_samples(&self) -> u64 {
        self.carry.len() as u64 / 2
    }

    /// The frame in progress, padded (with how many samples are real);
    /// `None` when there is none.
    pub(super) fn flush(&mut self) -> Option<(Bytes, usize)> {
        if self.carry.is_empty() {
            return None;
        }
        let real = self.carry.len() / 2;
        let mut frame = std::mem::take(&mut self.carry);
        frame.resize(PAYLOAD_BYTES, 0);
        Some((Bytes::from(frame), real))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tts_frame::{bytes_to_samples, samples_to_bytes};

    #[test]
    fn the_reframer_joins_clauses_without_padding() {
        let mut r = Reframer::default();
        let mut out = Vec::new();
        let frame = |v: i16| {
            let mut b = vec![0u8; 1920];
            samples_to_bytes(&[v; 960], &mut b);
            b
        };
        // A clause ending in a partial frame of 400 real samples, then the
        // next clause: the 400 samples are followed at once by the next.
        r.push(&frame(1), 960, &mut out);
        r.push(&frame(2), 400, &mut out);
        r.push(&frame(3), 960, &mut out);
        assert_eq!(out.len(), 2);
        let second: Vec<i16> = bytes_to_samples(&out[1]).collect();
        assert!(second[..400].iter().all(|&s| s == 2));
        assert!(second[400..].iter().all(|&s| s == 3));
        let (last, real) = r.flush().expect("a frame in progress");
        assert_eq!((real, last.len() / 2), (400, 960));
        assert!(r.flush().is_none());
    }
}
