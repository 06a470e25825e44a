//! A connection's writer: owns the socket's send half and serves two
//! queues, control messages (`ready`, `pong`, immediate errors) first,
//! then the bounded data queue (`start`, frames, `end`, request errors) in
//! order. A pong therefore never waits behind queued audio.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;
use tokio::sync::mpsc;
use tts_frame::encode_frame;

use crate::metrics::{self, RelayStats};
use crate::protocol::ServerMessage;
use crate::queue::Outgoing;

/// What the reader asks the writer to send outside the data queue.
pub(crate) enum Control {
    /// Send this message now.
    Message(ServerMessage),
}

/// Owns the socket's send half. Stamps each frame with the orchestrator's
/// time as it is written, drops frames of cancelled requests, and fills
/// each `end` with the frames and samples actually sent.
pub(crate) async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut ctrl: mpsc::Receiver<Control>,
    mut data: mpsc::Receiver<Outgoing>,
    stats: Arc<RelayStats>,
) {
    let mut streams: HashMap<u32, SentSoFar> = HashMap::new();
    let mut wire = Vec::with_capacity(tts_frame::FrameHeader::LEN + tts_frame::PAYLOAD_BYTES);
    loop {
        let message = tokio::select! {
            biased;
            c = ctrl.recv() => match c {
                Some(Control::Message(m)) => Message::Text(m.to_json().into()),
                None => break,
            },
            d = data.recv() => match d {
                Some(Outgoing::Frame { mut header, payload, samples, received, cancelled }) => {
                    stats.frame_dequeued();
                    if cancelled.is_cancelled() {
                        metrics::frames_dropped(1);
                        continue;
                    }
                    let now = Instant::now();
                    header.orchestrator_ts_us = tts_frame::now_us();
                    encode_frame(&header, &payload, &mut wire);
                    let stream = streams.entry(header.stream_id).or_default();
                    let gap = stream.last_sent.map(|last| now - last);
                    stream.last_sent = Some(now);
                    stream.frames += 1;
                    stream.samples += u64::from(samples);
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                    metrics::frame_sent(now - received, gap);
                    Message::Binary(bytes::Bytes::copy_from_slice(&wire))
                }
                Some(Outgoing::End { request_id, stream_id, cancelled }) => {
                    let sent = streams.remove(&stream_id).unwrap_or_default();
                    let end = ServerMessage::End {
                        request_id,
                        stream_id,
                        frames: sent.frames,
                        samples: sent.samples,
                        cancelled,
                    };
                    Message::Text(end.to_json().into())
                }
                Some(Outgoing::Failed { stream_id, error }) => {
                    // A failed request sends no `end`: forget its stream.
                    streams.remove(&stream_id);
                    Message::Text(error.to_json().into())
                }
                Some(Outgoing::Message(m)) => Message::Text(m.to_json().into()),
                Some(Outgoing::Close(frame)) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    // Frames still queued will never be sent: release them from the count.
    data.close();
    let mut dropped = 0;
    while let Ok(item) = data.try_recv() {
        if matches!(item, Outgoing::Frame { .. }) {
            stats.frame_dequeued();
            dropped += 1;
        }
    }
    if dropped > 0 {
        metrics::frames_dropped(dropped);
    }
}

/// What the writer has sent of one stream.
#[derive(Debug, Default)]
struct SentSoFar {
    frames: u64,
    samples: u64,
    last_sent: Option<Instant>,
}
