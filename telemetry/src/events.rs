//! Diagnostics as typed events: one value per occurrence whose
//! [`InternalEvent::emit`] writes the log line and the metrics together,
//! so that a log line and its series can never say different things.
//! Metric names stay in each service's `metrics` module; an event is told
//! which series to count in.

use std::time::Duration;

use tracing::warn;
use tts_frame::{Events, FrameError, QualityStats};

/// Something that happened, written to the logs and the metrics at once.
pub trait InternalEvent {
    /// Writes it.
    fn emit(self);
}

/// The series a service counts checked frames in.
#[derive(Debug)]
pub struct FrameSeries {
    /// The service (`worker`, `orchestrator`): the `component` of its
    /// log lines.
    pub component: &'static str,
    /// Frames by `hop` and `result`.
    pub frames: &'static str,
    /// Each passing frame's RMS level, dBFS (digital silence not recorded).
    pub level: &'static str,
    /// Quality events by `kind`.
    pub quality: &'static str,
    /// The hop's latency, when the service measures one.
    pub hop_latency: Option<&'static str>,
}

/// A frame checked at a hop (size, sequence, checksum, quality): counted
/// by hop and result, its level recorded, and each quality event it
/// raised counted and logged with the frame's sequence number (the
/// request's ids come from its span).
#[derive(Debug)]
pub struct FrameChecked<'a> {
    /// Where to count it.
    pub series: &'a FrameSeries,
    /// The hop it was checked at (a bounded label value).
    pub hop: &'static str,
    /// Its sequence number.
    pub sequence: u32,
    /// What the check found.
    pub result: &'a Result<QualityStats, FrameError>,
    /// The quality events it raised.
    pub events: Events,
    /// Its latency over the hop, when known.
    pub latency: Option<Duration>,
}

impl InternalEvent for FrameChecked<'_> {
    fn emit(self) {
        let s = self.series;
        if let (Some(name), Some(latency)) = (s.hop_latency, self.latency) {
            metrics::histogram!(name).record(latency.as_secs_f64());
        }
        let stats = match self.result {
            Ok(stats) => stats,
            Err(e) => {
                metrics::counter!(s.frames, "hop" => self.hop, "result" => e.kind()).increment(1);
                return;
            }
        };
        metrics::counter!(s.frames, "hop" => self.hop, "result" => "ok").increment(1);
        if stats.rms_dbfs.is_finite() {
            metrics::histogram!(s.level).record(stats.rms_dbfs);
        }
        for event in self.events.iter() {
            metrics::counter!(s.quality, "kind" => event.as_str()).increment(1);
            warn!(
                component = s.component,
                sequence = self.sequence,
                event = event.as_str(),
                "audio quality event"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tts_frame::{Tally, Validator};

    const SERIES: FrameSeries = FrameSeries {
        component: "worker",
        frames: "test_frames_total",
        level: "test_level_dbfs",
        quality: "test_quality_events_total",
        hop_latency: Some("test_hop_latency_seconds"),
    };

    #[test]
    fn a_checked_frame_is_counted_by_hop_and_result_and_its_latency_recorded() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (mut validator, mut tally) = (Validator::new(), Tally::default());
        let loud: Vec<u8> = (0..960i16)
            .flat_map(|i| ((i % 64 - 32) * 500).to_le_bytes())
            .collect();
        metrics::with_local_recorder(&recorder, || {
            for (sequence, crc) in [(0, tts_frame::checksum(&loud)), (1, 0)] {
                let result = validator.check(sequence, crc, &loud);
                let events = tally.record(&result);
                FrameChecked {
                    series: &SERIES,
                    hop: "worker_to_orchestrator",
                    sequence,
                    result: &result,
                    events,
                    latency: Some(Duration::from_millis(3)),
                }
                .emit();
            }
        });
        let text = handle.render();
        assert!(
            text.contains(r#"test_frames_total{hop="worker_to_orchestrator",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"test_frames_total{hop="worker_to_orchestrator",result="checksum_mismatch"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("test_level_dbfs"), "{text}");
        assert!(text.contains("test_hop_latency_seconds"), "{text}");
    }
}
