//! Where a request's frames come from: a worker's stream (through an
//! injected link latency, when one is active) or the phrase cache.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tts_proto::v1::AudioFrame;
use tts_telemetry::faults::Faults;

use crate::cache::Replay;

/// Where a request's frames come from.
pub(super) enum Source {
    /// A worker's stream.
    Worker(Link),
    /// The phrase cache.
    Cached(Replay),
}

impl Source {
    pub(super) async fn next(&mut self) -> Result<Option<AudioFrame>, Status> {
        match self {
            Self::Worker(link) => link.next().await,
            Self::Cached(replay) => Ok(replay.next().await),
        }
    }
}

/// A worker's stream, through an injected link latency while one is
/// active: a delay line that keeps reading while earlier frames wait, so
/// the delay is steady (as on a slow network), not cumulative.
pub(super) struct Link {
    stream: tonic::Streaming<AudioFrame>,
    faults: Arc<Faults>,
    /// What was read and when each may go on, in order.
    delayed: VecDeque<(Instant, Result<Option<AudioFrame>, Status>)>,
    /// The stream has ended (or failed): nothing more to read.
    ended: bool,
}

impl Link {
    /// Items the delay line holds at most (about 5 s of real-time audio).
    const HOLD: usize = 256;

    pub(super) fn new(stream: tonic::Streaming<AudioFrame>, faults: Arc<Faults>) -> Self {
        Self {
            stream,
            faults,
            delayed: VecDeque::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<Option<AudioFrame>, Status> {
        loop {
            let Some(&(due, _)) = self.delayed.front() else {
                if self.ended {
                    return Ok(None);
                }
                let item = self.stream.message().await;
                match self.faults.link_delay() {
                    None => return item,
                    Some(delay) => self.hold(item, delay),
                }
                continue;
            };
            if due <= Instant::now() {
                if let Some((_, item)) = self.delayed.pop_front() {
                    return item;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                item = self.stream.message(), if !self.ended && self.delayed.len() < Self::HOLD => {
                    let delay = self.faults.link_delay().unwrap_or_default();
                    self.hold(item, delay);
                }
            }
        }
    }

    fn hold(&mut self, item: Result<Option<AudioFrame>, Status>, delay: Duration) {
        self.ended |= !matches!(item, Ok(Some(_)));
        let earliest = self.delayed.back().map(|(at, _)| *at);
        let at = (Instant::now() + delay).max(earliest.unwrap_or(Instant::now()));
        self.delayed.push_back((at, item));
    }
}
