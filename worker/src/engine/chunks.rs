//! Where to cut a clause's latent frames for streaming. The decoder runs on
//! windows of growing size (small first, so that the first audio comes
//! early; larger later, to spend less on context), each widened by
//! `context` frames on both sides; only the centre frames' samples are kept.

/// One decoder call: it produces frames `start..end` and runs on `lo..hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First frame produced.
    pub start: usize,
    /// One past the last frame produced.
    pub end: usize,
    /// First frame fed to the model (`start − context`, or 0).
    pub lo: usize,
    /// One past the last frame fed (`end + context`, or the length).
    pub hi: usize,
}

/// Chunk sizes and context, in latent frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Frames produced by the first window.
    pub first: usize,
    /// Largest window (sizes double up to it).
    pub max: usize,
    /// Frames of context on each side.
    pub context: usize,
    /// Widen windows (where that leaves their output unchanged) to the
    /// plan's standard widths, so that the calls of several streams share
    /// a width more often and a device sees few distinct shapes.
    pub uniform: bool,
    /// 0: one session per part runs every call, whatever its shape. `N`:
    /// each session sees one input shape only (a decoder window of a
    /// standard width in a batch padded to a power of two up to `N`;
    /// phoneme ids and flow blocks padded to buckets), all made when the
    /// sessions open: a device that plans its kernels for the last shape
    /// it saw (cuDNN's convolutions in ONNX Runtime) then never plans
    /// again.
    pub constant_shapes: usize,
}

impl Default for ChunkPlan {
    fn default() -> Self {
        Self {
            first: 8,
            max: 128,
            context: 10,
            uniform: false,
            constant_shapes: 0,
        }
    }
}

impl ChunkPlan {
    /// The widths (frames fed, context included) of the windows of a long
    /// clause, smallest first: 18, 34, 52, 84, 148 by default.
    pub fn widths(&self) -> Vec<usize> {
        let windows = self.windows(self.first.max(1) + self.max.max(1) * 4);
        // The last window takes the remainder: not a standard width.
        let mut widths: Vec<usize> = windows[..windows.len().saturating_sub(1)]
            .iter()
            .map(|w| w.hi - w.lo)
            .collect();
        widths.sort_unstable();
        widths.dedup();
        widths
    }

    /// The windows covering `len` frames: every frame is produced by
    /// exactly one window, in order. A remainder shorter than half the
    /// current size joins the window before it.
    pub fn windows(&self, len: usize) -> Vec<Window> {
        let mut windows = Vec::new();
        let mut start = 0;
        let mut size = self.first.max(1);
        while start < len {
            let mut end = (start + size).min(len);
            if len - end < size / 2 {
                end = len;
            }
            windows.push(Window {
                start,
                end,
                lo: start.saturating_sub(self.context),
                hi: (end + self.context).min(len),
            });
            start = end;
            size = (size * 2).min(self.max.max(1));
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_comes_from_exactly_one_window() {
        let plan = ChunkPlan::default();
        for len in [1usize, 5, 8, 9, 12, 30, 100, 517, 1000] {
            let windows = plan.windows(len);
            let mut covered = vec![0u8; len];
            for w in &windows {
                assert!(
                    w.lo <= w.start && w.start < w.end && w.end <= w.hi && w.hi <= len,
                    "{w:?}"
                );
                assert_eq!(w.lo, w.start.saturating_sub(10));
                assert_eq!(w.hi, (w.end + 10).min(len));
                for f in &mut covered[w.start..w.end] {
                    *f += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "len {len}: {windows:?}");
        }
    }

    #[test]
    fn sizes_grow_from_small_to_the_cap() {
        let sizes: Vec<usize> = ChunkPlan::default()
            .windows(600)
            .iter()
            .map(|w| w.end - w.start)
            .collect();
        assert_eq!(sizes, vec![8, 16, 32, 64, 128, 128, 128, 96]);
        // A short remainder joins the last window instead of a tiny call.
        let sizes: Vec<usize> = ChunkPlan::default()
            .windows(27)
            .iter()
            .map(|w| w.end - w.start)
            .collect();
        assert_eq!(sizes, vec![8, 19]);
    }

    #[test]
    fn the_standard_widths_are_those_of_a_long_clause() {
        assert_eq!(ChunkPlan::default().widths(), vec![18, 34, 52, 84, 148]);
        let small = ChunkPlan {
            max: 32,
            ..ChunkPlan::default()
        };
        assert_eq!(small.widths(), vec![18, 34, 52]);
    }

    #[test]
    fn first_and_last_windows_are_clipped_to_the_sequence() {
        let w = ChunkPlan::default().windows(50);
        assert_eq!(
            w[0],
            Window {
                start: 0,
                end: 8,
                lo: 0,
                hi: 18
            }
        );
        let last = w[w.len() - 1];
        assert_eq!((last.end, last.hi), (50, 50));
    }
}
