//! What the client measured for one request, printable as text or JSON.

use serde::Serialize;

/// Min / mean / max of a series, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Samples seen.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Adds one value.
    pub fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.mean += (v - self.mean) / self.count as f64;
    }
}

/// The client's report for one request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The request.
    pub request_id: String,
    /// Its trace, as echoed in `start`.
    pub trace_id: String,
    /// The voice that spoke.
    pub voice: String,
    /// Its stream id.
    pub stream_id: u32,
    /// Milliseconds from sending `synthesize` to the first frame.
    pub time_to_first_audio_ms: f64,
    /// Frames received.
    pub frames: u64,
    /// Frames the server said it sent (`end.frames`).
    pub end_frames: u64,
    /// Samples the server said it sent (`end.samples`).
    pub end_samples: u64,
    /// Seconds of audio received.
    pub audio_seconds: f64,
    /// The stream's sample rate (48000 unless the request asked for
    /// another).
    pub sample_rate: u32,
    /// Seconds from sending `synthesize` to `end`.
    pub wall_seconds: f64,
    /// `wall_seconds / audio_seconds`: below 1 is faster than real time.
    pub real_time_factor: f64,
    /// Frames whose CRC-32C did not match.
    pub checksum_failures: u64,
    /// Frames out of sequence.
    pub sequence_failures: u64,
    /// Frames with a malformed header or size.
    pub malformed_frames: u64,
    /// `clipping` events: frames with a flat top at full scale.
    pub clipping_events: u64,
    /// `dc_offset` events: the stream's mean over about a second moved
    /// beyond ±300.
    pub dc_offset_events: u64,
    /// `dead_air` events: silence inside the stream longer than 500 ms.
    pub dead_air_events: u64,
    /// `leading_silence` events: more than 250 ms before the first sound.
    pub leading_silence_events: u64,
    /// Frames with every sample below 100 (pauses included; for
    /// information, not a problem).
    pub silent_frames: u64,
    /// Whether a frame carried the last-frame flag.
    pub last_flag_seen: bool,
    /// Whether the request was cancelled.
    pub cancelled: bool,
    /// Worker emit → orchestrator send, per frame (ms).
    pub worker_to_orchestrator: Summary,
    /// Orchestrator send → client receipt, per frame (ms).
    pub orchestrator_to_client: Summary,
    /// With timestamps: where each word lies in the audio, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<tts_protocol::WordTiming>,
    /// Words whose message came after the frame in which they start.
    pub late_words: u64,
}

impl Report {
    /// Frames that failed verification.
    pub fn integrity_failures(&self) -> u64 {
        self.checksum_failures + self.sequence_failures + self.malformed_frames
    }

    /// Quality events of every kind.
    pub fn quality_events(&self) -> u64 {
        self.clipping_events
            + self.dc_offset_events
            + self.dead_air_events
            + self.leading_silence_events
    }

    /// The report as a short table for people (with the words, when
    /// timestamps were asked for).
    pub fn to_text(&self) -> String {
        let mut text = self.table();
        if !self.words.is_empty() {
            text.push_str(&format!(
                "words          {} ({} late)\n",
                self.words.len(),
                self.late_words
            ));
            for w in &self.words {
                text.push_str(&format!(
                    "  {:>8.3} {:>8.3}  {}\n",
                    f64::from(w.start_ms) / 1e3,
                    f64::from(w.end_ms) / 1e3,
                    w.word
                ));
            }
        }
        text
    }

    fn table(&self) -> String {
        let hop = |s: &Summary| format!("mean {:.2} ms, max {:.2} ms", s.mean, s.max);
        format!(
            "request        {}\n\
             trace          {}\n\
             voice          {}\n\
             first audio    {:.1} ms\n\
             frames         {} (server sent {})\n\
             audio          {:.2} s ({} samples at {} kHz)\n\
             wall time      {:.2} s (real-time factor {:.3})\n\
             checksum fail  {}\n\
             sequence fail  {}\n\
             malformed      {}\n\
             quality        {} clipping, {} DC offset, {} dead air, {} leading silence events ({} silent frames)\n\
             worker→orch    {}\n\
             orch→client    {}\n",
            self.request_id,
            self.trace_id,
            self.voice,
            self.time_to_first_audio_ms,
            self.frames,
            self.end_frames,
            self.audio_seconds,
            self.end_samples,
            f64::from(self.sample_rate) / 1e3,
            self.wall_seconds,
            self.real_time_factor,
            self.checksum_failures,
            self.sequence_failures,
            self.malformed_frames,
            self.clipping_events,
            self.dc_offset_events,
            self.dead_air_events,
            self.leading_silence_events,
            self.silent_frames,
            hop(&self.worker_to_orchestrator),
            hop(&self.orchestrator_to_client),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_tracks_min_mean_max() {
        let mut s = Summary::default();
        for v in [3.0, 1.0, 2.0] {
            s.add(v);
        }
        assert_eq!((s.count, s.min, s.max), (3, 1.0, 3.0));
        assert!((s.mean - 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_report_gives_the_streams_own_rate() {
        let report = Report {
            end_samples: 6502,
            audio_seconds: 0.81,
            sample_rate: 8000,
            ..Report::default()
        };
        assert!(
            report.to_text().contains("(6502 samples at 8 kHz)"),
            "{}",
            report.to_text()
        );
        let wide = Report {
            sample_rate: 22050,
            ..report
        };
        assert!(
            wide.to_text().contains("at 22.05 kHz"),
            "{}",
            wide.to_text()
        );
    }
}
