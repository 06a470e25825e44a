//! A request's response stream: its frames as they are released, or the
//! status it ended with; it records the first frame and the outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;
use tracing::{Span, info};
use tts_proto::v1::AudioFrame;
use tts_protocol::Outcome;

use super::wire;
use crate::drain::DrainGuard;
use crate::metrics;
use crate::synth::{Failure, Sent};

/// The response stream: stamps each frame as it leaves, and records the
/// request's first frame and outcome. Dropping it (the client went away)
/// drops the receiver, which stops synthesis.
pub(crate) struct FrameStream {
    /// Frames released by the request's pacer (`--stream-queue-frames`
    /// of them at most, in 20 ms frames).
    rx: mpsc::Receiver<Sent>,
    /// Why the request ended early, read before any queued frame; `None`
    /// once its sender has gone.
    abort: Option<oneshot::Receiver<Failure>>,
    received: Instant,
    /// Named on the first frame only.
    voice: Option<String>,
    /// The request's `synthesize` span, entered where the stream logs:
    /// a poll does not run inside it.
    span: Span,
    frames: u32,
    done: bool,
    /// Counts the stream as in progress until it is dropped.
    _drain: DrainGuard,
}

impl FrameStream {
    pub(crate) fn new(
        rx: mpsc::Receiver<Sent>,
        abort: oneshot::Receiver<Failure>,
        received: Instant,
        voice: String,
        span: Span,
        drain: DrainGuard,
    ) -> Self {
        Self {
            rx,
            abort: Some(abort),
            received,
            voice: Some(voice),
            span,
            frames: 0,
            done: false,
            _drain: drain,
        }
    }

    /// The early ending, if one was said; the slot is let go once its
    /// sender has answered or gone.
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Option<Failure> {
        let slot = self.abort.as_mut()?;
        match Pin::new(slot).poll(cx) {
            Poll::Ready(result) => {
                self.abort = None;
                result.ok()
            }
            Poll::Pending => None,
        }
    }

    /// A frame on its way out.
    fn frame(&mut self, frame: crate::audio::Frame) -> AudioFrame {
        let voice = if self.frames == 0 {
            metrics::first_frame(self.received.elapsed());
            self.voice.take().unwrap_or_default()
        } else {
            String::new()
        };
        self.frames += 1;
        if frame.last {
            self.finish(Outcome::Completed);
        }
        wire::audio_frame(frame, voice)
    }

    /// The status for a request that ended early, counted by whose doing
    /// it was.
    fn failed(&mut self, why: Failure) -> Status {
        let (status, outcome) = wire::failure(&why);
        self.finish(outcome);
        status
    }

    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        metrics::request_finished(outcome);
        let _entered = self.span.enter();
        info!(
            frames = self.frames,
            outcome = outcome.as_str(),
            elapsed_ms = self.received.elapsed().as_millis() as u64,
            "synthesis finished"
        );
    }
}

impl Stream for FrameStream {
    type Item = Result<AudioFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(why) = this.poll_abort(cx) {
            return Poll::Ready(Some(Err(this.failed(why))));
        }
        match std::task::ready!(this.rx.poll_recv(cx)) {
            Some(Sent::Frame(frame)) => Poll::Ready(Some(Ok(this.frame(frame)))),
            Some(Sent::Failed(why)) => Poll::Ready(Some(Err(this.failed(why)))),
            // The sender ended early: its reason is in the abort slot.
            None => match this.poll_abort(cx) {
                Some(why) => Poll::Ready(Some(Err(this.failed(why)))),
                None => Poll::Ready(None),
            },
        }
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::Cancelled);
        }
    }
}
