//! MP3 and FLAC for `response_format: "mp3"` and `"flac"`, encoded here
//! from the worker's verified PCM frames as they arrive, so that the body
//! streams: LAME's MP3 frames leave as soon as it has a granule's worth of
//! samples (1,152 at 48 kHz, 576 below 32 kHz), FLAC writes one frame per
//! 20 ms frame after its stream header.

use flacenc::component::{BitRepr, StreamInfo};
use flacenc::error::Verify;
use flacenc::source::{Fill, FrameBuf};
use mp3lame_encoder::{Bitrate, Builder, FlushGap, MonoPcm, Quality};

/// Why an encoder could not start or encode.
#[derive(Debug, thiserror::Error)]
#[error("{codec}: {message}")]
pub(crate) struct CompressError {
    codec: &'static str,
    message: String,
}

fn mp3_error(e: impl std::fmt::Debug) -> CompressError {
    CompressError {
        codec: "mp3",
        message: format!("{e:?}"),
    }
}

fn flac_error(e: impl std::fmt::Debug) -> CompressError {
    CompressError {
        codec: "flac",
        message: format!("{e:?}"),
    }
}

/// Little-endian s16 samples as LAME and FLAC take them.
fn samples(pcm: &[u8]) -> impl Iterator<Item = i16> + '_ {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
}

/// Mono MP3 at the request's rate (48 kbit/s: speech, not music).
pub(crate) struct Mp3 {
    lame: mp3lame_encoder::Encoder,
    pcm: Vec<i16>,
}

impl Mp3 {
    pub(crate) fn new(rate: u32) -> Result<Self, CompressError> {
        let mut builder = Builder::new().ok_or_else(|| mp3_error("LAME did not start"))?;
        builder.set_num_channels(1).map_err(mp3_error)?;
        builder.set_sample_rate(rate).map_err(mp3_error)?;
        builder
            .set_output_sample_rate(std::num::NonZeroU32::new(rate))
            .map_err(mp3_error)?;
        builder.set_brate(Bitrate::Kbps48).map_err(mp3_error)?;
        builder.set_quality(Quality::Good).map_err(mp3_error)?;
        // No Xing/LAME tag: it would need a seek back to the start.
        builder.set_to_write_vbr_tag(false).map_err(mp3_error)?;
        Ok(Self {
            lame: builder.build().map_err(mp3_error)?,
            pcm: Vec::new(),
        })
    }

    /// The MP3 bytes LAME has ready after taking `pcm` (often none).
    pub(crate) fn push(&mut self, pcm: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        self.pcm.clear();
        self.pcm.extend(samples(pcm));
        out.reserve(mp3lame_encoder::max_required_buffer_size(self.pcm.len()));
        self.lame
            .encode_to_vec(MonoPcm(&self.pcm), out)
            .map_err(mp3_error)?;
        Ok(())
    }

    /// What LAME still holds, padded to whole MP3 frames.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CompressError> {
        out.reserve(7200);
        self.lame.flush_to_vec::<FlushGap>(out).map_err(mp3_error)?;
        Ok(())
    }
}

/// Mono 16-bit FLAC: the stream header (its length and MD5 unknown, as
/// a streaming encoder writes them), then one FLAC frame per 20 ms frame.
pub(crate) struct Flac {
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    info: StreamInfo,
    block: usize,
    frames: usize,
    /// The frame's samples, and the encoder's block for them: reused from
    /// frame to frame (every frame but the last is one block).
    pcm: Vec<i32>,
    buf: Option<FrameBuf>,
}

impl Flac {
    pub(crate) fn new(rate: u32) -> Result<Self, CompressError> {
        let block = rate as usize / 50;
        let mut info = StreamInfo::new(rate as usize, 1, 16).map_err(flac_error)?;
        // Every frame is 20 ms but the last, which may be shorter.
        info.set_block_sizes(block, block).map_err(flac_error)?;
        let config = flacenc::config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| flac_error(e))?;
        Ok(Self {
            config,
            info,
            block,
            frames: 0,
            pcm: Vec::new(),
            buf: None,
        })
    }

    /// `fLaC` and the STREAMINFO block.
    pub(crate) fn header(&self, out: &mut Vec<u8>) -> Result<(), CompressError> {
        let mut sink = flacenc::bitsink::ByteSink::new();
        let stream = flacenc::component::Stream::with_stream_info(self.info.clone());
        stream.write(&mut sink).map_err(flac_error)?;
        out.extend_from_slice(sink.as_slice());
        Ok(())
    }

    /// One FLAC frame for the frame's real samples.
    pub(crate) fn push(&mut self, pcm: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        self.pcm.clear();
        self.pcm.extend(samples(pcm).map(i32::from));
        if self.pcm.is_empty() {
            return Ok(());
        }
        // The smallest block FLAC allows; a shorter last frame is padded
        // with silence.
        let size = self.pcm.len().clamp(
            flacenc::constant::MIN_BLOCK_SIZE,
            self.block.max(self.pcm.len()),
        );
        self.pcm.resize(size, 0);
        let buf = match &mut self.buf {
            Some(buf) if buf.size() == size => buf,
            slot => slot.insert(FrameBuf::with_size(1, size).map_err(flac_error)?),
        };
        buf.fill_interleaved(&self.pcm).map_err(flac_error)?;
        let frame = flacenc::encode_fixed_size_frame(&self.config, buf, self.frames, &self.info)
            .map_err(flac_error)?;
        self.frames += 1;
        let mut sink = flacenc::bitsink::ByteSink::new();
        frame.write(&mut sink).map_err(flac_error)?;
        out.extend_from_slice(sink.as_slice());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32) -> Vec<u8> {
        (0..rate * ms / 1000)
            .flat_map(|i| {
                let t = f64::from(i) / f64::from(rate);
                (((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn every_rate_encodes_to_mp3_frames() {
        for rate in [8_000, 16_000, 24_000, 48_000] {
            let mut mp3 = Mp3::new(rate).expect("encoder");
            let mut out = Vec::new();
            let frame = tone(rate, 20);
            for _ in 0..50 {
                mp3.push(&frame, &mut out).expect("encode");
            }
            mp3.finish(&mut out).expect("flush");
            // An MPEG audio frame starts with an 11-bit sync word.
            assert!(out.len() > 1000, "{rate}: {} bytes", out.len());
            assert_eq!((out[0], out[1] & 0xe0), (0xff, 0xe0), "{rate}");
        }
    }

    #[test]
    fn flac_starts_with_its_stream_header_and_takes_a_short_last_frame() {
        let mut flac = Flac::new(24_000).expect("encoder");
        let mut out = Vec::new();
        flac.header(&mut out).expect("header");
        assert_eq!(&out[..4], b"fLaC");
        let head = out.len();
        flac.push(&tone(24_000, 20), &mut out).expect("frame");
        // A FLAC frame starts with its sync code 0xFFF8 (fixed block size).
        assert_eq!((out[head], out[head + 1]), (0xff, 0xf8));
        let short = tone(24_000, 5);
        flac.push(&short, &mut out).expect("short frame");
    }
}
