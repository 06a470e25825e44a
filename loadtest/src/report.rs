//! The report for people, and `--compare`.

use std::fmt::Write as _;

use crate::stats::{Percentiles, Report};

fn row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<24}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>10.2}{:>9}",
        p.p50, p.p90, p.p95, p.p99, p.p999, p.max, p.count
    );
}

/// The report as text.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let q = &r.requests;
    let _ = writeln!(
        out,
        "requests: {} sent, {} completed, {} refused (overloaded), {} failed in {:.1} s ({:.2} req/s)",
        q.sent, q.completed, q.refused, q.failed, r.wall_seconds, r.throughput.requests_per_second
    );
    let _ = writeln!(
        out,
        "audio: {:.1} s received, {:.2} s of audio per second (real-time streams sustained)",
        r.audio_seconds, r.throughput.audio_seconds_per_second
    );
    if !q.errors.is_empty() {
        let errors: Vec<String> = q.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "errors: {}", errors.join(", "));
    }
    let _ = writeln!(
        out,
        "\nlatency (ms)                  p50      p90      p95      p99    p99.9       max    count"
    );
    let l = &r.latency_ms;
    for (name, p) in [
        ("time to first audio", &l.ttfa),
        ("first audio after text", &l.first_audio_after_text),
        ("ping RTT", &l.rtt),
        ("inter-frame gap", &l.frame_gap),
        ("worker → orchestrator", &l.worker_to_orchestrator),
        ("orchestrator → client", &l.orchestrator_to_client),
        ("connect", &l.connect),
        ("refusal", &l.refusal),
        ("retry after (asked)", &l.retry_after),
    ] {
        if p.count > 0 {
            row(&mut out, name, p);
        }
    }
    let _ = writeln!(out, "\nunderruns (playout from the first frame + buffer)");
    for u in &r.underruns {
        let _ = writeln!(
            out,
            "  buffer {:>4} ms: {} late frames ({:.4} %), {} requests with an underrun ({:.2} %)",
            u.buffer_ms,
            u.late_frames,
            u.late_frame_ratio * 100.0,
            u.requests_with_underrun,
            u.underrun_rate * 100.0
        );
    }
    let i = &r.integrity;
    let _ = writeln!(
        out,
        "\nintegrity: {} frames expected, {} received, {} lost, {} duplicated, {} out of order, {} checksum failures, {} malformed",
        i.frames_expected,
        i.frames_received,
        i.lost,
        i.duplicated,
        i.out_of_order,
        i.checksum_failures,
        i.malformed
    );
    out
}

/// The differences between an earlier report and this one.
pub fn compare(old: &Report, new: &Report) -> String {
    let mut out = String::from("metric                            old          new      change\n");
    let mut line = |name: &str, a: f64, b: f64| {
        let change = if a == 0.0 {
            String::from("—")
        } else {
            format!("{:+.1} %", (b - a) / a * 100.0)
        };
        let _ = writeln!(out, "{name:<28}{a:>11.2}  {b:>11.2}  {change:>10}");
    };
    let (lo, ln) = (&old.latency_ms, &new.latency_ms);
    line(
        "requests/s",
        old.throughput.requests_per_second,
        new.throughput.requests_per_second,
    );
    line(
        "audio s per s",
        old.throughput.audio_seconds_per_second,
        new.throughput.audio_seconds_per_second,
    );
    line("TTFA p50 ms", lo.ttfa.p50, ln.ttfa.p50);
    line("TTFA p95 ms", lo.ttfa.p95, ln.ttfa.p95);
    line("TTFA p99 ms", lo.ttfa.p99, ln.ttfa.p99);
    line("RTT p99 ms", lo.rtt.p99, ln.rtt.p99);
    line("frame gap p99 ms", lo.frame_gap.p99, ln.frame_gap.p99);
    line("frame gap p99.9 ms", lo.frame_gap.p999, ln.frame_gap.p999);
    line(
        "failed requests",
        old.requests.failed as f64,
        new.requests.failed as f64,
    );
    line(
        "integrity failures",
        old.integrity.failures() as f64,
        new.integrity.failures() as f64,
    );
    for (a, b) in old.underruns.iter().zip(&new.underruns) {
        if a.buffer_ms == b.buffer_ms {
            line(
                &format!("underrun rate @{} ms %", a.buffer_ms),
                a.underrun_rate * 100.0,
                b.underrun_rate * 100.0,
            );
        }
    }
    out
}
