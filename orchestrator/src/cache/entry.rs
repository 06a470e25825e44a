//! What one cache entry holds: the worker's frames of a phrase as they
//! came (recorded while the request plays), its byte format, and its
//! replay on the worker's clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tts_proto::v1::AudioFrame;

use crate::protocol::Delivery;

/// Audio sent ahead of the playout clock on a real-time replay (as the
/// worker does).
const SEND_AHEAD: Duration = Duration::from_secs(1);
const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// The entry format's first bytes.
const MAGIC: &[u8] = b"TTSPC2";

/// One cached frame: samples, the worker's CRC-32C, the payload.
pub(super) type CachedFrame = (u32, u32, Vec<u8>);

/// A request's frames from the worker, as they came.
#[derive(Debug)]
pub(crate) struct Recording {
    pub(super) key: String,
    pub(super) voice: String,
    pub(super) frames: Vec<CachedFrame>,
    bytes: u64,
    limit: u64,
    overflow: bool,
}

impl Recording {
    /// An empty recording for `key`, kept while under `limit` bytes.
    pub(super) fn new(key: String, limit: u64) -> Self {
        Self {
            key,
            voice: String::new(),
            frames: Vec::new(),
            bytes: 0,
            limit,
            overflow: false,
        }
    }

    /// Whether there is something worth storing.
    pub(super) fn storable(&self) -> bool {
        !self.overflow && !self.frames.is_empty()
    }

    pub(crate) fn record(&mut self, frame: &AudioFrame) {
        if self.overflow {
            return;
        }
        self.bytes += frame.payload.len() as u64;
        if self.bytes > self.limit {
            // Too long to be worth a quarter of the cache: not kept.
            self.overflow = true;
            self.frames = Vec::new();
            return;
        }
        if self.voice.is_empty() {
            self.voice.clone_from(&frame.voice);
        }
        self.frames
            .push((frame.samples, frame.crc32c, frame.payload.clone()));
    }
}

/// Whether a cached frame's payload still matches its checksum.
pub(super) fn intact((_, crc32c, payload): &CachedFrame) -> bool {
    tts_frame::checksum(payload) == *crc32c
}

/// A cached phrase played back as the worker would send it.
#[derive(Debug)]
pub(crate) struct Replay {
    frames: VecDeque<CachedFrame>,
    voice: String,
    sequence: u32,
    started: Instant,
    delivery: Delivery,
}

impl Replay {
    /// `frames` of `voice`, replayed from now.
    pub(super) fn new(voice: String, frames: Vec<CachedFrame>, delivery: Delivery) -> Self {
        Self {
            frames: frames.into(),
            voice,
            sequence: 0,
            started: Instant::now(),
            delivery,
        }
    }

    /// The next frame, on the real-time clock for real-time requests;
    /// `None` after the last.
    pub(crate) async fn next(&mut self) -> Option<AudioFrame> {
        let (samples, crc32c, payload) = self.frames.pop_front()?;
        if self.delivery == Delivery::Realtime {
            let due = (self.started + FRAME_PERIOD * self.sequence).checked_sub(SEND_AHEAD);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let frame = AudioFrame {
            sequence: self.sequence,
            crc32c,
            payload,
            last: self.frames.is_empty(),
            worker_ts_us: tts_frame::now_us(),
            samples,
            // Named on the first frame only, as a worker does.
            voice: if self.sequence == 0 {
                std::mem::take(&mut self.voice)
            } else {
                String::new()
            },
            words: Vec::new(),
        };
        self.sequence += 1;
        Some(frame)
    }
}

pub(super) fn encode(voice: &str, frames: &[CachedFrame]) -> Vec<u8> {
    let body: usize = frames.iter().map(|(_, _, p)| 12 + p.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + voice.len() + body);
    out.extend_from_slice(MAGIC);
    let voice = &voice.as_bytes()[..voice.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(voice.len() as u16).to_le_bytes());
    out.extend_from_slice(voice);
    for (samples, crc, payload) in frames {
        out.extend_from_slice(&samples.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// The voice and frames of an entry; `None` for anything malformed.
pub(super) fn decode(bytes: &[u8]) -> Option<(String, Vec<CachedFrame>)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let (voice, mut rest) = rest.split_at_checked(len)?;
    let voice = String::from_utf8(voice.to_vec()).ok()?;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(12)?;
        let word = |i: usize| head[i..i + 4].try_into().ok().map(u32::from_le_bytes);
        let (samples, crc, size) = (word(0)?, word(4)?, word(8)? as usize);
        if size > tts_frame::FRAME_SAMPLES * 2 {
            return None;
        }
        let (payload, tail) = tail.split_at_checked(size)?;
        frames.push((samples, crc, payload.to_vec()));
        rest = tail;
    }
    (!frames.is_empty()).then_some((voice, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_does_not_decode() {
        let frames = vec![(960, 7, vec![1u8; 1920]), (100, 8, vec![2u8; 200])];
        let entry = encode("en_US-joe-medium", &frames);
        let (voice, back) = decode(&entry).expect("decodes");
        assert_eq!(voice, "en_US-joe-medium");
        assert_eq!(back, frames);
        for cut in [0, 3, MAGIC.len() + 1, entry.len() - 1] {
            assert!(decode(&entry[..cut]).is_none(), "cut at {cut}");
        }
        let mut oversized = encode("v", &[]);
        oversized.extend_from_slice(&960u32.to_le_bytes());
        oversized.extend_from_slice(&0u32.to_le_bytes());
        oversized.extend_from_slice(&4000u32.to_le_bytes());
        oversized.extend_from_slice(&[0; 4000]);
        assert!(decode(&oversized).is_none());
    }

    #[tokio::test]
    async fn a_replay_numbers_frames_keeps_their_checksums_and_marks_the_last() {
        let second = vec![2u8; 960];
        let frames = vec![
            (960, tts_frame::checksum(&[1u8; 1920]), vec![1u8; 1920]),
            (480, tts_frame::checksum(&second), second),
        ];
        let mut replay = Replay {
            frames: frames.into(),
            voice: "v".into(),
            sequence: 0,
            started: Instant::now(),
            delivery: Delivery::Realtime,
        };
        let a = replay.next().await.expect("first");
        let b = replay.next().await.expect("second");
        assert!(replay.next().await.is_none());
        assert_eq!((a.sequence, a.last), (0, false));
        assert_eq!((b.sequence, b.last, b.samples), (1, true, 480));
        assert_eq!(b.crc32c, tts_frame::checksum(&b.payload));
    }
}
