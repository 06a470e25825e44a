//! A context's own output: its clauses' items joined into one stream (one
//! `start`, word times from the context's start, frames re-cut and
//! re-numbered), queued for the client on the same terms as a request's.

use std::time::Instant;

use bytes::Bytes;
use tts_frame::{FRAME_SAMPLES, FrameHeader, PAYLOAD_BYTES, SAMPLE_RATE};

use super::{Context, Ending};
use crate::frame::{Failure, Frame, Item};
use crate::metrics;
use crate::protocol::{ErrorCode, WordTiming};
use crate::queue::Queued;

impl Context {
    /// Where the clause being spoken starts in the context's audio: after
    /// every frame sent and the samples waiting for the next one.
    fn clause_offset(&mut self) -> u64 {
        let at = u64::from(self.sequence) * FRAME_SAMPLES as u64 + self.reframer.pending_samples();
        *self.clause_offset.get_or_insert(at)
    }

    /// A clause relay's item: its frames are joined into the context's.
    pub(super) async fn on_clause_output(&mut self, item: Item) -> Option<Ending> {
        let offset = self.clause_offset();
        match item {
            Item::Words { words, .. } => self.words(offset, words).await,
            Item::Start { voice, .. } if !self.started => self.start(voice).await,
            Item::Frame(frame) => {
                let mut frames = Vec::new();
                let samples = frame.samples as usize;
                self.reframer.push(&frame.payload, samples, &mut frames);
                for pcm in frames {
                    let (ts, received) = (frame.header.worker_ts_us, frame.received);
                    if let Some(e) = self.emit(pcm, FRAME_SAMPLES, false, ts, received).await {
                        return Some(e);
                    }
                }
                None
            }
            Item::Failed { failure, .. } => Some(Ending::Failed(failure)),
            Item::Start { .. } | Item::End { .. } | Item::Refused { .. } => None,
        }
    }

    /// A clause's words, with their times from the context's start.
    async fn words(&mut self, offset: u64, words: Vec<WordTiming>) -> Option<Ending> {
        // The clause's times are from its own start.
        let ms = |t: u32| {
            let samples = offset + u64::from(t) * u64::from(SAMPLE_RATE) / 1000;
            (samples * 1000 / u64::from(SAMPLE_RATE)) as u32
        };
        let words = Item::Words {
            request_id: self.req.ids.request_id.clone(),
            stream_id: self.req.stream_id,
            words: words
                .into_iter()
                .map(|w| WordTiming {
                    start_ms: ms(w.start_ms),
                    end_ms: ms(w.end_ms),
                    word: w.word,
                })
                .collect(),
        };
        self.send(words).await
    }

    /// The context's `start`, at its first clause's.
    async fn start(&mut self, voice: String) -> Option<Ending> {
        self.started = true;
        let start = Item::Start {
            request_id: self.req.ids.request_id.clone(),
            trace_id: self.req.ids.trace_id.clone(),
            stream_id: self.req.stream_id,
            voice,
            format: self.req.options.format,
        };
        if let Some(ending) = self.send(start).await {
            return Some(ending);
        }
        metrics::first_audio(self.req.received.elapsed());
        if let Some(at) = self.first_clause_at {
            metrics::context_first_audio(at.elapsed());
        }
        None
    }

    /// After a clause: the next one, or a flush's padded frame.
    pub(super) async fn after_clause(&mut self) -> Option<Ending> {
        self.start_next();
        let flushed = self
            .flush_after
            .is_some_and(|n| self.clauses_done >= n && self.running.is_none());
        if flushed {
            self.flush_after = None;
            if let Some((frame, real)) = self.reframer.flush() {
                return self
                    .emit(frame, real, false, tts_frame::now_us(), Instant::now())
                    .await;
            }
        }
        None
    }

    /// The context's last frame: what is left, padded, flagged last (an
    /// empty frame when nothing is left, so that a last flag is always sent
    /// once audio was).
    pub(super) async fn last_frame(&mut self) -> Ending {
        if !self.started {
            // Nothing was ever spoken: `end` with no frames.
            return Ending::Completed;
        }
        let (frame, real) = self
            .reframer
            .flush()
            .unwrap_or_else(|| (Bytes::from(vec![0; PAYLOAD_BYTES]), 0));
        match self
            .emit(frame, real, true, tts_frame::now_us(), Instant::now())
            .await
        {
            Some(ending) => ending,
            None => Ending::Completed,
        }
    }

    /// Queues one frame of the context's own for the client.
    async fn emit(
        &mut self,
        pcm: Bytes,
        real: usize,
        last: bool,
        worker_ts_us: u64,
        received: Instant,
    ) -> Option<Ending> {
        let (payload, samples) = match self.transcoder.as_mut() {
            Some(t) => match t.convert(pcm, real as u32) {
                Ok(converted) => converted,
                Err(e) => {
                    let message = format!("frame {} could not be encoded: {e}", self.sequence);
                    return Some(Ending::Failed(Failure::new(ErrorCode::Internal, message)));
                }
            },
            None => {
                let message = "the requested format could not be set up";
                return Some(Ending::Failed(Failure::new(ErrorCode::Internal, message)));
            }
        };
        let req = &self.req;
        metrics::payload_sent(req.options.format.encoding, req.api.as_str(), payload.len());
        let header = FrameHeader {
            stream_id: req.stream_id,
            sequence: self.sequence,
            crc32c: tts_frame::checksum(&payload),
            last,
            worker_ts_us,
            orchestrator_ts_us: 0,
        };
        self.sequence += 1;
        let frame = Item::Frame(Frame {
            header,
            payload,
            samples,
            received,
            cancelled: self.req.stop.token(),
        });
        self.send(frame).await
    }

    /// Queues an item for the client on the same terms as a request's
    /// (see [`FrameQueue::send`](crate::queue::FrameQueue::send)); `None`
    /// once it is queued.
    async fn send(&mut self, item: Item) -> Option<Ending> {
        let stalled = self.ctx.stalled_timeout;
        match self.out.send(item, &self.req.stop, stalled).await {
            Queued::Sent { .. } => None,
            Queued::Stopped => Some(self.stopped().await),
            Queued::Stalled => Some(Ending::Failed(Failure::new(
                ErrorCode::ClientTooSlow,
                format!("the client took none of the context's audio for {stalled:?}"),
            ))),
            Queued::Gone => Some(Ending::Disconnected),
        }
    }
}
