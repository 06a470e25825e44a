//! A speech response's body: the container's header, then each frame's
//! bytes as it arrives, cut short (not ended) when the request fails after
//! its first audio.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::DisconnectGuard;
use super::compress::{CompressError, Flac, Mp3};
use super::ogg::OggOpus;
use crate::frame::{Frame, Item};
use crate::metrics::{self, RelayStats};
use crate::protocol::Format;
use crate::protocol::http::Container;
use crate::queue::FrameReceiver;

/// The response once its first frame is in: the container's type and
/// rate in the headers, `head` first, then the rest as it comes.
pub(super) fn streaming_response(
    head: Vec<u8>,
    rx: FrameReceiver,
    body: BodyWriter,
    guard: DisconnectGuard,
) -> Response {
    let (container, format) = (body.container, body.format);
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let rest = futures::stream::unfold(State::Streaming { rx, body, guard }, State::next);
    let content_type = match container {
        Container::Wav => "audio/wav".to_owned(),
        Container::Pcm => format!("audio/pcm;rate={};channels=1", format.sample_rate),
        Container::OggOpus => "audio/ogg;codecs=opus".to_owned(),
        Container::Mp3 => "audio/mpeg".to_owned(),
        Container::Flac => "audio/flac".to_owned(),
    };
    let mut response = Response::new(Body::from_stream(futures::StreamExt::chain(first, rest)));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert("x-sample-rate", HeaderValue::from(format.sample_rate));
    response
}

/// The body after its first bytes.
enum State {
    Streaming {
        rx: FrameReceiver,
        body: BodyWriter,
        /// Dropped with the body: the client left.
        guard: DisconnectGuard,
    },
    Done,
}

impl State {
    /// The body's next bytes, and what is left.
    async fn next(self) -> Option<(std::io::Result<Bytes>, Self)> {
        let Self::Streaming {
            mut rx,
            mut body,
            guard,
        } = self
        else {
            return None;
        };
        loop {
            match rx.recv().await {
                Some(Item::End { .. }) => {
                    return match body.finish() {
                        Ok(tail) if tail.is_empty() => None,
                        Ok(tail) => Some((Ok(Bytes::from(tail)), Self::Done)),
                        Err(e) => Some((Err(std::io::Error::other(e)), Self::Done)),
                    };
                }
                Some(Item::Frame(frame)) => match body.push(frame) {
                    Ok(bytes) if bytes.is_empty() => {}
                    Ok(bytes) => {
                        let next = Self::Streaming { rx, body, guard };
                        return Some((Ok(Bytes::from(bytes)), next));
                    }
                    Err(e) => return Some((Err(std::io::Error::other(e)), Self::Done)),
                },
                Some(Item::Start { .. } | Item::Words { .. } | Item::Refused { .. }) => {}
                Some(Item::Failed { .. }) | None => {
                    // The status is sent: cut the body short so that the
                    // client sees an incomplete response, not a short one.
                    let err = std::io::Error::other("the request failed after its first audio");
                    return Some((Err(err), Self::Done));
                }
            }
        }
    }
}

/// Turns frames into the response's bytes.
pub(super) struct BodyWriter {
    container: Container,
    format: Format,
    codec: Codec,
    started: bool,
    stats: Arc<RelayStats>,
}

/// What encodes the frames, for the containers that do more than copy.
enum Codec {
    Copy,
    Ogg(OggOpus),
    Mp3(Mp3),
    /// Boxed: its configuration and stream header are large.
    Flac(Box<Flac>),
}

impl BodyWriter {
    /// A writer for `container`; an encoder that cannot start is an error
    /// before any audio.
    pub(super) fn new(
        container: Container,
        format: Format,
        stats: Arc<RelayStats>,
    ) -> Result<Self, CompressError> {
        let codec = match container {
            Container::Wav | Container::Pcm => Codec::Copy,
            Container::OggOpus => Codec::Ogg(OggOpus::new()),
            Container::Mp3 => Codec::Mp3(Mp3::new(format.sample_rate)?),
            Container::Flac => Codec::Flac(Box::new(Flac::new(format.sample_rate)?)),
        };
        Ok(Self {
            container,
            format,
            codec,
            started: false,
            stats,
        })
    }

    /// The bytes for one frame (after the container's header, the first
    /// time); an encoder's failure cuts the body short.
    pub(super) fn push(&mut self, frame: Frame) -> Result<Vec<u8>, CompressError> {
        let Frame {
            payload,
            samples,
            received,
            ..
        } = frame;
        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        metrics::frame_sent(received.elapsed(), None);
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            match &mut self.codec {
                Codec::Copy if self.container == Container::Wav => {
                    out.extend_from_slice(&wav_header(self.format.sample_rate));
                }
                Codec::Ogg(ogg) => ogg.headers(&mut out),
                Codec::Flac(flac) => flac.header(&mut out)?,
                Codec::Copy | Codec::Mp3(_) => {}
            }
        }
        // Only the real samples of the last, padded frame.
        let real = &payload[..(samples as usize * 2).min(payload.len())];
        match &mut self.codec {
            Codec::Copy => out.extend_from_slice(real),
            Codec::Ogg(ogg) => ogg.packet(&payload, samples, &mut out),
            Codec::Mp3(mp3) => mp3.push(real, &mut out)?,
            Codec::Flac(flac) => flac.push(real, &mut out)?,
        }
        Ok(out)
    }

    /// What ends the body.
    pub(super) fn finish(&mut self) -> Result<Vec<u8>, CompressError> {
        let mut out = Vec::new();
        match &mut self.codec {
            Codec::Ogg(ogg) => ogg.finish(&mut out),
            Codec::Mp3(mp3) => mp3.finish(&mut out)?,
            Codec::Copy | Codec::Flac(_) => {}
        }
        Ok(out)
    }
}

/// A streaming WAV header: mono s16le at `rate`, with the RIFF and data
/// lengths at their maximum, as streaming WAV writers do when the length
/// is not known yet (hound needs a seekable writer).
fn wav_header(rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wav_header_describes_mono_s16() {
        let h = wav_header(24_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 24_000);
        assert_eq!(u16::from_le_bytes([h[34], h[35]]), 16);
    }
}
