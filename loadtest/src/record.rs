//! What one request looked like to a listener: when each frame arrived,
//! how late it was against a playout schedule, and whether the stream was
//! whole.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One received frame.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Sequence number from the header.
    pub sequence: u32,
    /// When it arrived, since the request's (scheduled) start.
    pub at: Duration,
    /// Worker stamp → orchestrator stamp, µs.
    pub worker_to_orchestrator_us: u64,
    /// Orchestrator stamp → arrival, µs.
    pub orchestrator_to_client_us: u64,
    /// Whether its CRC-32C matched.
    pub checksum_ok: bool,
}

/// Integrity counts for one request (or summed over many).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// Frames the server said it sent (`end.frames`).
    pub frames_expected: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Expected frames that never arrived.
    pub lost: u64,
    /// Frames whose sequence number had been seen before.
    pub duplicated: u64,
    /// Frames with a sequence number below one already seen.
    pub out_of_order: u64,
    /// Frames whose CRC-32C did not match.
    pub checksum_failures: u64,
    /// Binary messages that were not well-formed frames.
    pub malformed: u64,
}

impl Integrity {
    /// Adds another request's counts.
    pub fn add(&mut self, other: &Integrity) {
        self.frames_expected += other.frames_expected;
        self.frames_received += other.frames_received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.checksum_failures += other.checksum_failures;
        self.malformed += other.malformed;
    }

    /// Anything wrong at all.
    pub fn failures(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order + self.checksum_failures + self.malformed
    }
}

/// Counts for a stream's frames: `expected` is `end.frames`.
pub fn integrity(arrivals: &[Arrival], expected: u64, malformed: u64) -> Integrity {
    let mut seen = HashSet::with_capacity(arrivals.len());
    let (mut duplicated, mut out_of_order, mut max_seen) = (0, 0, None::<u32>);
    for a in arrivals {
        if !seen.insert(a.sequence) {
            duplicated += 1;
        } else if max_seen.is_some_and(|m| a.sequence < m) {
            out_of_order += 1;
        }
        max_seen = max_seen.max(Some(a.sequence));
    }
    let unique = seen.iter().filter(|&&s| u64::from(s) < expected).count() as u64;
    Integrity {
        frames_expected: expected,
        frames_received: arrivals.len() as u64,
        lost: expected.saturating_sub(unique),
        duplicated,
        out_of_order,
        checksum_failures: arrivals.iter().filter(|a| !a.checksum_ok).count() as u64,
        malformed,
    }
}

/// Playout against a jitter buffer of `buffer`: playback starts `buffer`
/// after the first frame arrives and frame `n` is due `n × 20 ms` later.
/// Returns, for each frame that arrived after its due time, how late it
/// was (in arrival order). A frame that never arrives is not counted here
/// (it is counted as lost).
pub fn late_frames(arrivals: &[Arrival], buffer: Duration) -> Vec<Duration> {
    let Some(first) = arrivals.iter().map(|a| a.at).min() else {
        return Vec::new();
    };
    let frame = Duration::from_millis(u64::from(tts_frame::FRAME_MS));
    arrivals
        .iter()
        .filter_map(|a| {
            let due = first + buffer + frame * a.sequence;
            a.at.checked_sub(due).filter(|late| !late.is_zero())
        })
        .collect()
}

/// Gaps between consecutive arrivals.
pub fn gaps(arrivals: &[Arrival]) -> impl Iterator<Item = Duration> + '_ {
    arrivals.windows(2).map(|w| w[1].at.saturating_sub(w[0].at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: u32, ms: u64) -> Arrival {
        Arrival {
            sequence,
            at: Duration::from_millis(ms),
            worker_to_orchestrator_us: 0,
            orchestrator_to_client_us: 0,
            checksum_ok: true,
        }
    }

    #[test]
    fn a_late_frame_is_an_underrun_and_an_early_one_is_not() {
        // First frame at 100 ms; with a 60 ms buffer frame n is due at
        // 160 + 20n ms.
        let arrivals = [at(0, 100), at(1, 101), at(2, 199), at(3, 221), at(4, 230)];
        let late = late_frames(&arrivals, Duration::from_millis(60));
        // Frame 2 is due at 200 (arrived 199: early), frame 3 at 220
        // (arrived 221: 1 ms late), frame 4 at 240 (early).
        assert_eq!(late, vec![Duration::from_millis(1)]);
        // A bigger buffer absorbs it; a smaller one does not.
        assert!(late_frames(&arrivals, Duration::from_millis(120)).is_empty());
        // With 20 ms, frames 2, 3 and 4 (due 160, 180, 200) are all late.
        let tight = late_frames(&arrivals, Duration::from_millis(20));
        assert_eq!(
            tight,
            [39, 41, 30].map(Duration::from_millis).to_vec(),
            "{tight:?}"
        );
    }

    #[test]
    fn a_frame_exactly_on_time_is_not_late() {
        let arrivals = [at(0, 0), at(1, 80)];
        assert!(late_frames(&arrivals, Duration::from_millis(60)).is_empty());
    }

    #[test]
    fn integrity_counts_loss_duplicates_and_disorder() {
        let arrivals = [at(0, 0), at(2, 1), at(1, 2), at(2, 3), at(4, 4)];
        let i = integrity(&arrivals, 5, 1);
        assert_eq!(i.frames_received, 5);
        assert_eq!(i.lost, 1, "frame 3 never came");
        assert_eq!(i.duplicated, 1, "frame 2 twice");
        assert_eq!(i.out_of_order, 1, "frame 1 after 2");
        assert_eq!(i.malformed, 1);
        assert_eq!(i.failures(), 4);
        let clean = integrity(&[at(0, 0), at(1, 20)], 2, 0);
        assert_eq!(clean.failures(), 0);
    }

    #[test]
    fn gaps_between_arrivals() {
        let arrivals = [at(0, 0), at(1, 20), at(2, 65)];
        let g: Vec<u64> = gaps(&arrivals).map(|d| d.as_millis() as u64).collect();
        assert_eq!(g, vec![20, 45]);
    }
}
