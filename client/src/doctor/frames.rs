//! `doctor frames`: synthesises a probe sentence and shows every frame:
//! level, peak, clipping, mean, silence, the stream's quality events where
//! they were raised (clipping, DC offset, dead air, leading silence),
//! verification and per-hop latency, flagging latency anomalies (z-score
//! above 3). Any quality event or failed frame makes it fail.

use serde_json::json;

use super::{Findings, Status};
use crate::{Client, ClientError, Collector, FrameRecord, SynthesizeOptions, Utterance};

/// The sentence spoken when none is given.
pub const PROBE_TEXT: &str = "The quick brown fox jumps over the lazy dog.";
/// A frame whose end-to-end latency is this many standard deviations from
/// the mean is an anomaly.
pub const Z_THRESHOLD: f64 = 3.0;

/// Indexes of values more than [`Z_THRESHOLD`] standard deviations from the
/// mean (none when all values are equal).
pub fn anomalies(values: &[f64]) -> Vec<usize> {
    let n = values.len() as f64;
    if values.len() < 3 {
        return Vec::new();
    }
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd == 0.0 {
        return Vec::new();
    }
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| ((*v - mean) / sd).abs() > Z_THRESHOLD)
        .map(|(i, _)| i)
        .collect()
}

/// Synthesises `text` and tabulates its frames.
pub async fn run(url: &str, text: &str) -> Result<Findings, ClientError> {
    let mut client = Client::connect(url).await?;
    let sent = std::time::Instant::now();
    let request_id = client.start(text, &SynthesizeOptions::default()).await?;
    let utterance = client
        .collect(Collector::new(request_id, sent).record_frames())
        .await?;
    Ok(findings(&utterance))
}

/// Every frame a row, anomalies flagged; `Fail` for failed checks, all
/// silence or quality events, `Warn` for latency anomalies.
fn findings(utterance: &Utterance) -> Findings {
    let frames = &utterance.frames;
    let latency: Vec<f64> = frames
        .iter()
        .map(|f| f.worker_to_orchestrator_ms + f.orchestrator_to_client_ms)
        .collect();
    let flagged = anomalies(&latency);
    let report = &utterance.report;
    let all_silent = frames.iter().all(|f| f.silent);
    let status = if report.integrity_failures() > 0 || all_silent || report.quality_events() > 0 {
        Status::Fail
    } else if !flagged.is_empty() {
        Status::Warn
    } else {
        Status::Ok
    };
    let rows = frames
        .iter()
        .enumerate()
        .map(|(i, f)| row(f, flagged.contains(&i)))
        .collect();
    Findings {
        columns: [
            "seq",
            "rms dBFS",
            "peak",
            "clip",
            "mean",
            "silent",
            "event",
            "checksum",
            "worker→orch ms",
            "orch→client ms",
            "anomaly",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        status,
        detail: json!({
            "status": status,
            "request_id": report.request_id,
            "trace_id": report.trace_id,
            "frames": frames,
            "anomalies": flagged.iter().map(|&i| frames[i].sequence).collect::<Vec<_>>(),
            "integrity_failures": report.integrity_failures(),
            "quality_events": {
                "clipping": report.clipping_events,
                "dc_offset": report.dc_offset_events,
                "dead_air": report.dead_air_events,
                "leading_silence": report.leading_silence_events,
            },
            "silent_frames": frames.iter().filter(|f| f.silent).count(),
            "time_to_first_audio_ms": report.time_to_first_audio_ms,
        }),
    }
}

fn row(f: &FrameRecord, anomaly: bool) -> Vec<String> {
    let flag = |b: bool, word: &str| if b { word.to_owned() } else { String::new() };
    vec![
        f.sequence.to_string(),
        format!("{:.1}", f.rms_dbfs),
        f.peak.to_string(),
        flag(f.clipping, "CLIP"),
        format!("{:.0}", f.dc),
        flag(f.silent, "yes"),
        f.events.join(" ").to_uppercase(),
        if f.verified {
            "ok".into()
        } else {
            f.error.clone().unwrap_or_else(|| "FAIL".into())
        },
        format!("{:.2}", f.worker_to_orchestrator_ms),
        format!("{:.2}", f.orchestrator_to_client_ms),
        flag(anomaly, "z>3"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_only_outliers() {
        // 10–12 ms with ordinary spread: nothing stands out.
        let mut values: Vec<f64> = (0..60).map(|i| 10.0 + f64::from(i % 5) * 0.5).collect();
        assert!(anomalies(&values).is_empty());
        values.push(60.0);
        assert_eq!(anomalies(&values), vec![60]);
        assert!(anomalies(&[5.0, 5.0, 5.0]).is_empty());
    }
}
