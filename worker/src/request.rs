//! What a request asks of the worker, stated once: its ids, the voice, how
//! it is to be spoken and when its frames leave. Its clauses carry only
//! their own text.

use tts_protocol::{Delivery, Noise, Speed};

/// Ids that follow a request through logs.
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    /// The request.
    pub request_id: String,
    /// The trace it belongs to.
    pub trace_id: String,
    /// The client session it came from.
    pub session_id: String,
}

impl RequestIds {
    /// The request's `synthesize` span (linked to its trace for OTLP).
    /// Its checks, its pacer and its response stream log inside it, so
    /// every line about the request carries these ids from the span.
    pub fn span(&self) -> tracing::Span {
        let span = tracing::info_span!("synthesize", request_id = %self.request_id,
            trace_id = %self.trace_id, session_id = %self.session_id);
        tts_telemetry::otel::link_trace(&span, &self.trace_id);
        span
    }
}

/// A request's speaking rate and noise.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prosody {
    /// 1 is the voice's own rate; 2 twice as fast.
    pub speed: Speed,
    /// Piper's phoneme noise; `None` for the voice's own.
    pub noise_scale: Option<Noise>,
    /// Piper's duration noise; `None` for the voice's own.
    pub noise_w: Option<Noise>,
}

impl Prosody {
    /// Piper's `[noise_scale, length_scale, noise_w]` from a voice's own.
    pub fn scales(&self, voice: [f32; 3]) -> [f32; 3] {
        [
            self.noise_scale.map_or(voice[0], Noise::get),
            voice[1] / self.speed.get(),
            self.noise_w.map_or(voice[2], Noise::get),
        ]
    }
}

/// How a request is to be spoken: the same for every clause of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speech {
    /// Rate and noise.
    pub prosody: Prosody,
    /// For a voice that speaks several languages (espeak-ng), the one to
    /// speak; `None` for the voice's own.
    pub language: Option<String>,
    /// Whether to say where each word is in the audio.
    pub timestamps: bool,
}

/// A request the service has checked, as the synthesis pool takes it.
#[derive(Debug, Clone)]
pub struct SpeechRequest {
    /// Its ids.
    pub ids: RequestIds,
    /// The voice, by index among the loaded voices.
    pub voice: usize,
    /// How it is spoken.
    pub speech: Speech,
    /// When its frames leave.
    pub delivery: Delivery,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_take_the_voices_own_where_the_request_names_none() {
        let voice = [0.667, 1.0, 0.8];
        assert_eq!(Prosody::default().scales(voice), voice);
        let fast_and_flat = Prosody {
            speed: Speed::new(2.0).expect("in range"),
            noise_scale: Some(Noise::new("noise_scale", 0.0).expect("in range")),
            noise_w: None,
        };
        assert_eq!(fast_and_flat.scales(voice), [0.0, 0.5, 0.8]);
    }
}
