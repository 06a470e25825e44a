//! Playback on the default output device (cargo feature `play`), fed while
//! frames arrive through a [`JitterBuffer`].

use std::sync::{Arc, Mutex};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::jitter::JitterBuffer;

/// Why playback failed.
#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    /// No output device.
    #[error("no audio output device")]
    NoDevice,
    /// The device refused the stream.
    #[error("audio output: {0}")]
    Device(String),
}

/// A stream playing on the default device (mono, copied to every channel).
pub struct Player {
    buffer: Arc<Mutex<JitterBuffer>>,
    _stream: cpal::Stream,
}

impl Player {
    /// Opens the default device at `sample_rate`; playback starts once
    /// `start_ms` of audio is buffered.
    pub fn start(sample_rate: u32, start_ms: u32) -> Result<Self, PlaybackError> {
        let device = cpal::default_host()
            .default_output_device()
            .ok_or(PlaybackError::NoDevice)?;
        let channels = device
            .default_output_config()
            .map_err(|e| PlaybackError::Device(e.to_string()))?
            .channels();
        let config = cpal::StreamConfig {
            channels,
            sample_rate: cpal::SampleRate(sample_rate),
            buffer_size: cpal::BufferSize::Default,
        };
        let start = (u64::from(sample_rate) * u64::from(start_ms) / 1000) as usize;
        let buffer = Arc::new(Mutex::new(JitterBuffer::new(start)));
        let shared = Arc::clone(&buffer);
        let mut mono = Vec::new();
        let stream = device
            .build_output_stream(
                &config,
                move |out: &mut [f32], _| {
                    let frames = out.len() / usize::from(channels);
                    mono.resize(frames, 0.0);
                    match shared.lock() {
                        Ok(mut b) => b.fill(&mut mono),
                        Err(_) => mono.fill(0.0),
                    }
                    for (frame, s) in out.chunks_mut(usize::from(channels)).zip(&mono) {
                        frame.fill(*s);
                    }
                },
                |e| eprintln!("tts-client: playback: {e}"),
                None,
            )
            .map_err(|e| PlaybackError::Device(e.to_string()))?;
        stream
            .play()
            .map_err(|e| PlaybackError::Device(e.to_string()))?;
        Ok(Self {
            buffer,
            _stream: stream,
        })
    }

    /// Queues samples as they arrive.
    pub fn push(&self, samples: &[i16]) {
        if let Ok(mut b) = self.buffer.lock() {
            b.push(samples);
        }
    }

    /// Marks the end and waits until everything has been played; returns
    /// the underruns counted.
    pub fn finish(self) -> u64 {
        if let Ok(mut b) = self.buffer.lock() {
            b.end();
        }
        loop {
            match self.buffer.lock() {
                Ok(b) if !b.finished() => {}
                Ok(b) => {
                    let underruns = b.underruns();
                    drop(b);
                    // Let the device drain its last buffer.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    return underruns;
                }
                Err(_) => return 0,
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
