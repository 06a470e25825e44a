//! The playback side of streaming: a jitter buffer between frames as they
//! arrive and an audio device that pulls samples at its own pace. Playback
//! starts once the buffer holds the start threshold; running dry before
//! the stream ended is an underrun (counted; the buffer then refills to
//! the threshold before resuming, so one late frame is one gap, not a
//! stutter).

use std::collections::VecDeque;

/// Samples waiting to be played, and what happened to them.
#[derive(Debug)]
pub struct JitterBuffer {
    queue: VecDeque<f32>,
    start: usize,
    playing: bool,
    ended: bool,
    underruns: u64,
    played: u64,
}

impl JitterBuffer {
    /// A buffer that starts playing once it holds `start` samples.
    pub fn new(start: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            start: start.max(1),
            playing: false,
            ended: false,
            underruns: 0,
            played: 0,
        }
    }

    /// Adds arriving samples (s16).
    pub fn push(&mut self, samples: &[i16]) {
        self.queue
            .extend(samples.iter().map(|&s| f32::from(s) / 32768.0));
    }

    /// No more samples will come: play out what is left.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Fills `out` (mono) for the device: samples while playing, silence
    /// while (re)filling.
    pub fn fill(&mut self, out: &mut [f32]) {
        if !self.playing
            && (self.queue.len() >= self.start || (self.ended && !self.queue.is_empty()))
        {
            self.playing = true;
        }
        let mut n = 0;
        if self.playing {
            n = out.len().min(self.queue.len());
            for (o, s) in out.iter_mut().zip(self.queue.drain(..n)) {
                *o = s;
            }
            self.played += n as u64;
            if n < out.len() {
                if !self.ended {
                    self.underruns += 1;
                }
                self.playing = false;
            }
        }
        out[n..].fill(0.0);
    }

    /// Times the buffer ran dry while the stream was still arriving.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// Samples handed to the device.
    pub fn played(&self) -> u64 {
        self.played
    }

    /// Whether everything has been played and nothing more will come.
    pub fn finished(&self) -> bool {
        self.ended && self.queue.is_empty()
    }

    /// Samples waiting.
    pub fn buffered(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_threshold_then_plays_in_order() {
        let mut b = JitterBuffer::new(4);
        let mut out = [9.0f32; 3];
        b.push(&[16_384, 16_384]);
        b.fill(&mut out);
        assert_eq!(out, [0.0; 3], "silence until 4 samples are buffered");
        b.push(&[-16_384, 0, 8_192]);
        b.fill(&mut out);
        assert_eq!(out, [0.5, 0.5, -0.5]);
        assert_eq!((b.played(), b.buffered(), b.underruns()), (3, 2, 0));
    }

    #[test]
    fn a_late_frame_is_one_underrun_and_the_end_is_not_one() {
        let mut b = JitterBuffer::new(2);
        let mut out = [0.0f32; 4];
        b.push(&[1, 2, 3]);
        b.fill(&mut out); // plays 3, runs dry while the stream is live
        assert_eq!(b.underruns(), 1);
        b.fill(&mut out); // refilling: silence, not another underrun
        b.fill(&mut out);
        assert_eq!(b.underruns(), 1);
        b.push(&[4]);
        b.end();
        b.fill(&mut out); // the tail plays out below the threshold
        assert_eq!(b.played(), 4);
        assert_eq!(
            b.underruns(),
            1,
            "running out at the end is not an underrun"
        );
        assert!(b.finished());
    }
}
