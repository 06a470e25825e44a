//! Playback on the default output device (cargo feature `play`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

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

/// Plays mono samples at `sample_rate` on the default device (copied to
/// every channel) and returns when they have been played.
pub fn play(samples: &[i16], sample_rate: u32) -> Result<(), PlaybackError> {
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
    let audio: Arc<Vec<f32>> = Arc::new(samples.iter().map(|&s| f32::from(s) / 32768.0).collect());
    let position = Arc::new(AtomicUsize::new(0));
    let (data, pos) = (Arc::clone(&audio), Arc::clone(&position));
    let stream = device
        .build_output_stream(
            &config,
            move |out: &mut [f32], _| {
                for frame in out.chunks_mut(usize::from(channels)) {
                    let i = pos.fetch_add(1, Ordering::Relaxed);
                    frame.fill(data.get(i).copied().unwrap_or(0.0));
                }
            },
            |e| eprintln!("tts-client: playback: {e}"),
            None,
        )
        .map_err(|e| PlaybackError::Device(e.to_string()))?;
    stream
        .play()
        .map_err(|e| PlaybackError::Device(e.to_string()))?;
    while position.load(Ordering::Relaxed) < audio.len() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the device drain its last buffer.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}
