//! A connection's writer: owns the socket's send half and serves two
//! queues, control messages (`ready`, `pong`, immediate errors) first,
//! then the bounded data queue (`start`, frames, `end`, request errors) in
//! order. A pong therefore never waits behind queued audio. Items become
//! WebSocket messages here, at the socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tts_frame::encode_frame;

use crate::frame::{Frame, Item};
use crate::metrics::{self, RelayStats};
use crate::protocol::ServerMessage;
use crate::queue::FrameReceiver;

/// What the reader asks the writer to send outside the data queue.
pub(crate) enum Control {
    /// Send this message now.
    Message(ServerMessage),
    /// Send what the data queue still holds (its senders are gone), then
    /// close the connection with this frame.
    Close(CloseFrame),
}

/// Owns the socket's send half. Stamps each frame with the orchestrator's
/// time as it is written, drops frames of cancelled requests, and fills
/// each `end` with the frames and samples actually sent.
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut ctrl: mpsc::Receiver<Control>,
    mut data: FrameReceiver,
    stats: Arc<RelayStats>,
) {
    let mut writer = Writer {
        streams: HashMap::new(),
        wire: Vec::with_capacity(tts_frame::FrameHeader::LEN + tts_frame::PAYLOAD_BYTES),
        stats,
    };
    loop {
        let message = tokio::select! {
            biased;
            c = ctrl.recv() => match c {
                Some(Control::Message(m)) => Message::Text(m.to_json().into()),
                Some(Control::Close(frame)) => {
                    writer.flush_then_close(&mut sink, &mut data, frame).await;
                    break;
                }
                None => break,
            },
            d = data.recv() => match d {
                Some(item) => match writer.message(item) {
                    Some(message) => message,
                    None => continue,
                },
                None => break,
            },
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    // Frames still queued will never be sent.
    let dropped = data.close();
    if dropped > 0 {
        metrics::frames_dropped(dropped);
    }
}

/// What the writer keeps from message to message.
struct Writer {
    /// What has been sent of each stream.
    streams: HashMap<u32, SentSoFar>,
    /// A frame's bytes on the wire, reused.
    wire: Vec<u8>,
    stats: Arc<RelayStats>,
}

impl Writer {
    /// The message for `item`; `None` for a frame of a stopped request
    /// (dropped and counted).
    fn message(&mut self, item: Item) -> Option<Message> {
        let message = match item {
            Item::Frame(frame) => return self.frame(frame),
            Item::End {
                request_id,
                stream_id,
                cancelled,
            } => {
                let sent = self.streams.remove(&stream_id).unwrap_or_default();
                ServerMessage::End {
                    request_id,
                    stream_id,
                    frames: sent.frames,
                    samples: sent.samples,
                    cancelled,
                }
            }
            Item::Failed { stream_id, .. } => {
                // A failed request sends no `end`: forget its stream.
                self.streams.remove(&stream_id);
                item.into_message().ok()?
            }
            other => other.into_message().ok()?,
        };
        Some(Message::Text(message.to_json().into()))
    }

    fn frame(&mut self, frame: Frame) -> Option<Message> {
        let Frame {
            mut header,
            payload,
            samples,
            received,
            cancelled,
        } = frame;
        if cancelled.is_cancelled() {
            metrics::frames_dropped(1);
            return None;
        }
        let now = Instant::now();
        header.orchestrator_ts_us = tts_frame::now_us();
        encode_frame(&header, &payload, &mut self.wire);
        let stream = self.streams.entry(header.stream_id).or_default();
        let gap = stream.last_sent.map(|last| now - last);
        stream.last_sent = Some(now);
        stream.frames += 1;
        stream.samples += u64::from(samples);
        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        metrics::frame_sent(now - received, gap);
        Some(Message::Binary(bytes::Bytes::copy_from_slice(&self.wire)))
    }

    /// Sends what is left in the data queue, then the close frame.
    async fn flush_then_close(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        data: &mut FrameReceiver,
        frame: CloseFrame,
    ) {
        while let Some(item) = data.recv().await {
            if let Some(message) = self.message(item)
                && sink.send(message).await.is_err()
            {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
}

/// What the writer has sent of one stream.
#[derive(Debug, Default)]
struct SentSoFar {
    frames: u64,
    samples: u64,
    last_sent: Option<Instant>,
}
