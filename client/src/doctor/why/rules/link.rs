//! The link between orchestrator and workers: slow, or changing frames on
//! the way (and a damaged phrase-cache entry, checked on the same hop
//! rule).

use super::super::figures::{Figures, Orchestrator, Worker};
use super::super::observe::Reach;
use super::super::{Cause, Finding, Hop, Severity};
use super::*;

/// `network_latency` (worker-link): deep pings (the orchestrator's gRPC
/// round trip to a worker, which no synthesis touches) are slow; without
/// pings, frames take long from worker to orchestrator while no client
/// holds them up. Not when a worker is silent (its pings time out).
pub(crate) fn network_latency(f: &Figures) -> Option<Finding> {
    if f.workers
        .iter()
        .any(|w| matches!(w.reach, Reach::Silent(_)))
    {
        return None;
    }
    let hop = f.orchestrator.as_ref().map(|o| &o.hop_latency);
    let hop_p95 = hop.and_then(|h| h.quantile(0.95));
    let median_ping = median(&f.ping_ms);
    let slow_pings = f.ping_ms.len() >= 2 && median_ping.is_some_and(|p| p >= SLOW_PING_MS);
    let quiet_clients = f.orchestrator.as_ref().is_some_and(|o| {
        o.client_too_slow == 0.0 && o.backpressure.sum / f.window_s.max(1.0) < 0.1
    });
    let slow_frames = f.ping_ms.is_empty()
        && quiet_clients
        && hop.is_some_and(|h| h.count >= 50.0)
        && hop_p95.is_some_and(|p| p >= SLOW_HOP_S);
    if !(slow_pings || slow_frames) {
        return None;
    }
    let mut e = Vec::new();
    if let Some(p) = median_ping {
        e.push(evidence(
            "doctor:deep_ping_worker_rtt_ms (median)",
            p,
            format!("< {SLOW_PING_MS}"),
        ));
    }
    if let Some(p) = hop_p95 {
        e.push(evidence(
            "tts_orchestrator_worker_hop_latency_seconds (p95, window)",
            p,
            format!("< {SLOW_HOP_S}"),
        ));
    }
    let worst = median_ping.unwrap_or(0.0).max(hop_p95.unwrap_or(0.0) * 2e3);
    Some(Finding {
        cause: Cause::NetworkLatency,
        hop: Hop::WorkerLink,
        severity: if worst >= CRITICAL_PING_MS { Severity::Critical } else { Severity::Warning },
        summary: format!(
            "The link between the orchestrator and its workers is slow: deep pings take {} and frames {} from worker to orchestrator, while synthesis itself is not involved.",
            median_ping.map_or("(none answered)".into(), |p| format!("{p:.0} ms")),
            hop_p95.map_or("(no frames)".into(), |p| format!("{:.0} ms (p95)", p * 1e3))
        ),
        evidence: e,
        action: "Check the network path between the orchestrator and its workers (a proxy or VPN in between, a congested or cross-zone link); place them in one zone; `doctor rtt` repeats the deep-ping measurement.".into(),
        certainty: if slow_pings { 0.85 } else { 0.6 },
        runbook: String::new(),
    })
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// `frame_corruption`: frames that failed their checks at the
/// orchestrator, on the hop they crossed (worker-link for a worker's
/// frames, redis for a phrase-cache entry).
pub(crate) fn frame_corruption(f: &Figures) -> Vec<Finding> {
    let Some(o) = &f.orchestrator else {
        return Vec::new();
    };
    let mut findings: Vec<Finding> = f.workers.iter().filter_map(worker_frames).collect();
    findings.extend(link_frames(o));
    findings.extend(cache_frames(o));
    findings
}

/// Frames a worker's own checks failed before they left it.
fn worker_frames(w: &Worker) -> Option<Finding> {
    let m = w.metrics.as_ref().filter(|m| m.frames_bad > 0.0)?;
    Some(Finding {
        cause: Cause::FrameCorruption,
        hop: Hop::Worker,
        severity: Severity::Critical,
        summary: format!(
            "Worker {} made {} frame(s) that failed its own checks before leaving (size or sequence).",
            w.url, m.frames_bad
        ),
        evidence: vec![evidence("tts_worker_frames_total{result!=\"ok\"} (window)", m.frames_bad, "0")],
        action: "A worker bug or a damaged voice: the worker's log names the requests; restart it and report the voice and text.".into(),
        certainty: 1.0,
        runbook: String::new(),
    })
}

/// Frames from the workers that failed the orchestrator's checks: changed
/// or lost on the link.
fn link_frames(o: &Orchestrator) -> Option<Finding> {
    let bad: f64 = o.link_bad.iter().map(|(_, n)| n).sum();
    let list = o
        .link_bad
        .iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    (bad > 0.0).then(|| Finding {
        cause: Cause::FrameCorruption,
        hop: Hop::WorkerLink,
        severity: Severity::Critical,
        summary: format!(
            "Frames from the workers failed the orchestrator's checks ({list} of {} frames): they changed or went missing after the worker checked and checksummed them.",
            bad + o.link_ok
        ),
        evidence: o
            .link_bad
            .iter()
            .map(|(r, n)| evidence(format!("tts_orchestrator_frames_total{{hop=\"worker_to_orchestrator\",result=\"{r}\"}} (window)"), *n, "0"))
            .collect(),
        action: "Inspect what sits between worker and orchestrator (proxies, NICs, middleboxes that rewrite bytes); each affected request ended with `internal` and its frame number is in the orchestrator's log.".into(),
        certainty: 1.0,
        runbook: String::new(),
    })
}

/// Frames replayed from the phrase cache that failed their checksums.
fn cache_frames(o: &Orchestrator) -> Option<Finding> {
    (o.cache_bad > 0.0).then(|| Finding {
        cause: Cause::FrameCorruption,
        hop: Hop::Redis,
        severity: Severity::Critical,
        summary: format!(
            "{} frame(s) replayed from the phrase cache in Redis failed their checksums: a cached entry is damaged.",
            o.cache_bad
        ),
        evidence: vec![evidence(
            "tts_orchestrator_frames_total{hop=\"phrase_cache_to_orchestrator\",result!=\"ok\"} (window)",
            o.cache_bad,
            "0",
        )],
        action: "Delete the damaged entries (`redis-cli --scan --pattern 'tts:phrase:*'` and DEL, or FLUSH the cache namespace) and find what writes to Redis besides the orchestrators.".into(),
        certainty: 1.0,
        runbook: String::new(),
    })
}
