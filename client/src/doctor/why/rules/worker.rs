//! The worker's own causes: down, stalled, starved of CPU, saturated, or
//! making audio with quality events.

use super::super::figures::{Figures, Worker, WorkerMetrics};
use super::super::observe::Reach;
use super::super::{Cause, Finding, Hop, Severity};
use super::*;

/// `worker_down` (worker): unreachable, not serving, or its breaker open.
/// A worker whose port accepts connections but says nothing is stalled,
/// not down.
pub(crate) fn worker_down(f: &Figures, w: &Worker) -> Option<Finding> {
    let (why, mut e, certainty) = down_reasons(w);
    if why.is_empty() || matches!(w.reach, Reach::Silent(_)) {
        return None;
    }
    if let Some(o) = &f.orchestrator
        && o.worker_unavailable > 0.0
    {
        e.push(evidence(
            "tts_orchestrator_requests_total{code=\"worker_unavailable\"} (window)",
            o.worker_unavailable,
            "0",
        ));
    }
    let others_serve = f
        .workers
        .iter()
        .any(|o| o.url != w.url && o.reach == Reach::Answers && o.serving == Some(true));
    Some(Finding {
        cause: Cause::WorkerDown,
        hop: Hop::Worker,
        severity: if others_serve {
            Severity::Warning
        } else {
            Severity::Critical
        },
        summary: format!("Worker {} is down: {}.", w.url, why.join("; ")),
        evidence: e,
        action: if others_serve {
            "The other workers carry the load; restart this one (its last log lines say why it stopped) or take it out of --worker or the registry.".into()
        } else {
            "No worker serves: restart the worker process (its last log lines say why it stopped) and check that the orchestrator's --worker URL points at it.".into()
        },
        certainty,
        runbook: String::new(),
    })
}

/// Why a worker counts as down, the evidence, and how sure that is:
/// unreachable, its breaker open, or answering without serving.
fn down_reasons(w: &Worker) -> (Vec<String>, Vec<Evidence>, f64) {
    let mut e = Vec::new();
    let mut why = Vec::new();
    let mut certainty: f64 = 0.0;
    if let Reach::Unreachable(reason) = &w.reach {
        why.push(format!("unreachable ({reason})"));
        e.push(evidence(
            format!("probe:tcp_connect{{worker=\"{}\"}}", w.url),
            0.0,
            "1 (accepts connections)",
        ));
        certainty = 0.95;
    }
    if w.breaker.as_deref() == Some("open") {
        why.push("its circuit breaker is open".into());
        e.push(evidence(
            format!(
                "tts_orchestrator_worker_breaker_state{{worker=\"{}\"}}",
                w.url
            ),
            2.0,
            "0 (closed)",
        ));
        certainty = certainty.max(0.85);
    }
    if w.reach == Reach::Answers && w.serving == Some(false) {
        why.push("it answers but is not serving (draining, or its voices are not loaded)".into());
        e.push(evidence(
            format!("grpc:GetLoad.serving{{worker=\"{}\"}}", w.url),
            0.0,
            "1",
        ));
        certainty = certainty.max(0.7);
    }
    (why, e, certainty)
}

/// `worker_stalled` (worker): no progress though the connection is up: a
/// port that accepts but does not answer, synthesis threads the watchdog
/// reports, or streams open without a frame in the window.
pub(crate) fn worker_stalled(f: &Figures, w: &Worker) -> Option<Finding> {
    let (summary, e, certainty) = match (&w.reach, &w.metrics) {
        (Reach::Silent(detail), _) => silent(w, detail),
        (_, Some(m)) if m.threads_stalled > 0.0 || m.stalls > 0.0 => threads_stalled(w, m),
        (_, Some(m))
            if m.inflight_start > 0.0
                && m.inflight_end > 0.0
                && m.frames_ok == 0.0
                && f.window_s >= 2.0 =>
        {
            streams_frozen(f, w, m)
        }
        _ => return None,
    };
    Some(Finding {
        cause: Cause::WorkerStalled,
        hop: Hop::Worker,
        severity: Severity::Critical,
        summary,
        evidence: e,
        action: "Look at the worker's last log lines (`synthesis thread made no progress` names the requests it holds) and its state (`kill -CONT` if it was stopped); take a profile (`doctor profile --target worker`), then restart it.".into(),
        certainty,
        runbook: String::new(),
    })
}

/// A stall's summary, evidence and certainty.
type Stall = (String, Vec<Evidence>, f64);

/// The worker's port accepts connections but nothing answers on it.
fn silent(w: &Worker, detail: &str) -> Stall {
    (
        format!(
            "Worker {} accepts connections but answers nothing within 2 s ({detail}): the process is stopped or wedged.",
            w.url
        ),
        vec![
            evidence(
                format!("probe:tcp_connect{{worker=\"{}\"}}", w.url),
                1.0,
                "1 (accepts)",
            ),
            evidence(
                format!("probe:answers_within_2s{{worker=\"{}\"}}", w.url),
                0.0,
                "1",
            ),
        ],
        0.95,
    )
}

/// The watchdog reports synthesis threads that hold work without progress.
fn threads_stalled(w: &Worker, m: &WorkerMetrics) -> Stall {
    (
        format!(
            "Worker {}: {} synthesis thread(s) hold work without progress (the watchdog's bound is --stalled-thread-secs).",
            w.url,
            m.threads_stalled.max(1.0)
        ),
        vec![
            evidence(
                "tts_worker_synthesis_threads_stalled",
                m.threads_stalled,
                "0",
            ),
            evidence("tts_worker_synthesis_stalls_total (window)", m.stalls, "0"),
        ],
        0.9,
    )
}

/// Streams stayed open through the window without a frame.
fn streams_frozen(f: &Figures, w: &Worker, m: &WorkerMetrics) -> Stall {
    (
        format!(
            "Worker {} holds {} stream(s) but sent no frame in {:.0} s.",
            w.url, m.inflight_end, f.window_s
        ),
        vec![
            evidence(
                "tts_worker_inflight_requests",
                m.inflight_end,
                "0 when no frame moves",
            ),
            evidence(
                "tts_worker_frames_total{result=\"ok\"} (window)",
                0.0,
                "> 0 while streams are open",
            ),
        ],
        0.85,
    )
}

/// CPU seconds per second of step time, when there was enough synthesis
/// to judge and the voice computes on the CPU.
fn cpu_share(w: &Worker, m: &WorkerMetrics) -> Option<f64> {
    let on_cpu = w.device == "cpu" && m.engine.as_deref() != Some("fixed-cost");
    (on_cpu && m.step.sum >= MIN_STEP_SECONDS).then(|| m.cpu_seconds / m.step.sum)
}

/// Audio sent in the window below this is too little to measure its cost
/// from; the worker's own (slower-moving) estimate is used instead,
/// seconds.
pub(crate) const MIN_AUDIO_SECONDS: f64 = 2.0;

/// How many times the start-up cost synthesis now takes: the window's
/// step time per second of audio sent, against the start-up baseline
/// (the worker's own decayed estimate when too little audio was sent).
pub(super) fn cost_rise(m: &WorkerMetrics) -> Option<f64> {
    let (estimate, base) = m.cost?;
    let audio = m.frames_ok * 0.02;
    let now = if audio >= MIN_AUDIO_SECONDS {
        m.step.sum / audio
    } else {
        estimate
    };
    Some(now / base)
}

/// Whether the worker's slowness is explained by a lack of CPU rather
/// than by its own load.
fn starved(w: &Worker, m: &WorkerMetrics) -> bool {
    cpu_share(w, m).is_some_and(|share| share < STARVED_CPU_SHARE)
        && cost_rise(m).is_some_and(|rise| rise >= COST_RISE)
}

/// `cpu_starved` (worker): compute per audio second rose against its
/// start-up baseline while the process got little CPU for its steps
/// (another process takes the CPU, or the CPU is throttled).
pub(crate) fn cpu_starved(w: &Worker) -> Option<Finding> {
    let m = w.metrics.as_ref()?;
    if !starved(w, m) {
        return None;
    }
    let share = cpu_share(w, m)?;
    let rise = cost_rise(m)?;
    let late = m.playout_misses + m.first_audio_misses;
    Some(Finding {
        cause: Cause::CpuStarved,
        hop: Hop::Worker,
        severity: if late > 0.0 || m.refused > 0.0 { Severity::Critical } else { Severity::Warning },
        summary: format!(
            "Worker {} gets too little CPU: its synthesis steps took {:.1} s but the process ran {:.1} s on a CPU, and synthesis costs {rise:.1}× what it did at start-up, while its own load is {:.0} % of its limit.",
            w.url,
            m.step.sum,
            m.cpu_seconds,
            100.0 * m.utilisation / m.limit.unwrap_or(1.0).max(1e-3)
        ),
        evidence: vec![
            evidence("rate(process_cpu_seconds_total) / rate(tts_worker_step_seconds_sum)", share, format!(">= {STARVED_CPU_SHARE} (about 1 when each step has a core)")),
            evidence("(tts_worker_step_seconds_sum / audio sent) / tts_worker_compute_per_audio_second_baseline", rise, format!("< {COST_RISE}")),
            evidence("tts_worker_admission_utilisation", m.utilisation, "not the cause: below the limit before the slowdown"),
            evidence("tts_worker_deadline_misses_total (window)", late, "0"),
        ],
        action: "Find what else runs on the worker's host or container (`top`; a CPU limit: cgroup cpu.stat nr_throttled) and move it, or give the worker dedicated cores; the worker's own load is not the cause.".into(),
        certainty: if share < 0.3 { 0.9 } else { 0.75 },
        runbook: String::new(),
    })
}

/// `worker_saturated` (worker): admitted work is at capacity: utilisation
/// near the admission limit with refusals or late frames, while the
/// worker gets its CPU (otherwise it is `cpu_starved`). Late frames are
/// critical when they are both a share of those sent and enough to be
/// heard (`MIN_LATE_FRAMES`). Refusals well
/// below the limit with hardly a late frame are a burst of new streams
/// that admission kept out so that the others stay on time: reported for
/// information only.
pub(crate) fn worker_saturated(w: &Worker) -> Option<Finding> {
    let m = w.metrics.as_ref()?;
    if starved(w, m) {
        return None;
    }
    let limit = m.limit.unwrap_or(0.8);
    let refused_share = m.refused / m.requests.max(1.0);
    // Mostly refused is full, whatever the utilisation between refusals.
    let near = m.utilisation >= NEAR_LIMIT * limit
        || (m.refused >= MIN_REFUSALS && refused_share >= REFUSED_SHARE);
    let late = m.playout_misses;
    let late_share = late / (m.frames_ok + late).max(1.0);
    let audible = late_share >= LATE_SHARE && late >= MIN_LATE_FRAMES;
    if !(near || m.refused > 0.0 || audible) {
        return None;
    }
    let severity = if audible {
        Severity::Critical
    } else if near {
        Severity::Warning
    } else {
        Severity::Info
    };
    let e = saturation_evidence(w, m, limit, refused_share, late_share);
    Some(Finding {
        cause: Cause::WorkerSaturated,
        hop: Hop::Worker,
        severity,
        summary: format!(
            "Worker {} is {}: its admitted streams need {:.0} % of its synthesis threads (limit {:.0} %); it refused {} request(s) and sent {:.1} % of its frames late in the window.",
            w.url,
            if near { "at capacity" } else { "short of compute at times" },
            100.0 * m.utilisation,
            100.0 * limit,
            m.refused,
            100.0 * late_share
        ),
        evidence: e,
        action: "Add a worker (or synthesis threads where cores are free) or lower the offered load; clients should wait retry_after_ms before retrying a refusal.".into(),
        certainty: if near { 0.85 } else { 0.6 },
        runbook: String::new(),
    })
}

/// The evidence of saturation: utilisation against the limit, refusals,
/// late frames, and (when it can be judged) that the steps had their CPU.
fn saturation_evidence(
    w: &Worker,
    m: &WorkerMetrics,
    limit: f64,
    refused_share: f64,
    late_share: f64,
) -> Vec<Evidence> {
    let mut e = vec![
        evidence(
            "tts_worker_admission_utilisation",
            m.utilisation,
            format!(
                "< {:.2} ({NEAR_LIMIT} × the limit {limit})",
                NEAR_LIMIT * limit
            ),
        ),
        evidence(
            "tts_worker_requests_total{outcome=\"refused\"} (window)",
            m.refused,
            "0",
        ),
        evidence(
            "refused / all requests ended (window)",
            refused_share,
            format!("< {REFUSED_SHARE}"),
        ),
        evidence(
            "tts_worker_deadline_misses_total{kind=\"playout\"} / frames sent (window)",
            late_share,
            format!("< {LATE_SHARE} (or fewer than {MIN_LATE_FRAMES} frames)"),
        ),
    ];
    if let Some(share) = cpu_share(w, m) {
        e.push(evidence(
            "rate(process_cpu_seconds_total) / rate(tts_worker_step_seconds_sum)",
            share,
            "about 1: the steps have their CPU, so this is load, not starvation",
        ));
    }
    e
}

/// `audio_quality` (worker): clipping, DC offset or dead air in the audio
/// the worker's own checks saw leave.
pub(crate) fn audio_quality(w: &Worker) -> Option<Finding> {
    let m = w.metrics.as_ref()?;
    let events: Vec<(&str, f64)> = m
        .quality
        .iter()
        .filter(|(kind, n)| *n > 0.0 && *kind != "leading_silence")
        .copied()
        .collect();
    if events.is_empty() {
        return None;
    }
    let list = events
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(Finding {
        cause: Cause::AudioQuality,
        hop: Hop::Worker,
        severity: Severity::Warning,
        summary: format!("The audio worker {} produced has quality events: {list}.", w.url),
        evidence: events
            .iter()
            .map(|(k, n)| evidence(format!("tts_worker_frame_quality_events_total{{kind=\"{k}\"}} (window)"), *n, "0"))
            .collect(),
        action: "Listen to an affected request (`doctor frames \"…\"` shows each frame's level), and check the voice model and its gain; the worker's log names the requests and frames.".into(),
        certainty: 0.85,
        runbook: String::new(),
    })
}

/// `cost_model_off` (worker): a batching worker's recent calls took more
/// than `MODEL_OFF` times what its call model predicted for them (or less
/// than its inverse). Too slow is a warning that admission over-admits,
/// critical once frames are late; too fast, that it refuses early.
pub(crate) fn cost_model_off(w: &Worker) -> Option<Finding> {
    let m = w.metrics.as_ref()?;
    let (voice, ratio) = m.call_model.as_ref()?;
    let slow = *ratio >= MODEL_OFF;
    if !slow && *ratio > 1.0 / MODEL_OFF {
        return None;
    }
    let late = m.playout_misses + m.first_audio_misses;
    let (severity, what) = if slow {
        let severity = if m.playout_misses >= MIN_LATE_FRAMES {
            Severity::Critical
        } else {
            Severity::Warning
        };
        (
            severity,
            "admits more streams than the calls can keep on time",
        )
    } else {
        (Severity::Warning, "refuses streams it could keep")
    };
    Some(Finding {
        cause: Cause::CostModelOff,
        hop: Hop::Worker,
        severity,
        summary: format!(
            "Worker {}'s calls of voice {voice} take {ratio:.2}× what its call model predicts: it {what}.",
            w.url
        ),
        evidence: vec![
            evidence(
                format!("tts_worker_call_observed_to_predicted_ratio{{voice=\"{voice}\"}}"),
                *ratio,
                format!("between {:.2} and {MODEL_OFF}", 1.0 / MODEL_OFF),
            ),
            evidence("tts_worker_deadline_misses_total (window)", late, "0"),
        ],
        action: "Compare tts_worker_call_cost_seconds (per call, per step) with the warm-up's figures in the worker's start-up log (`call model from the warm-up sweep`); calls whose shapes keep changing (windows of many widths) or a device shared with another process vary more than one line explains. Restart the worker to sweep again if the device changed.".into(),
        certainty: if slow && late > 0.0 { 0.8 } else { 0.6 },
        runbook: String::new(),
    })
}
