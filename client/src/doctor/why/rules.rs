//! The rules: each a small function from the window's figures to the
//! findings it supports. The thresholds are stated here and justified in
//! `docs/runbook.md` (one section per cause).

use super::figures::{Figures, Worker, WorkerMetrics};
use super::observe::Reach;
use super::{Cause, Evidence, Finding, Hop, Severity};

/// Utilisation at or above this share of the admission limit is "at
/// capacity": the next few streams will be refused.
pub(crate) const NEAR_LIMIT: f64 = 0.9;
/// Below this many CPU seconds per second of synthesis-step time, the
/// steps spent most of their time waiting for a CPU (a step that has its
/// core uses about one).
pub(crate) const STARVED_CPU_SHARE: f64 = 0.5;
/// Compute per audio second at or above this multiple of the worker's
/// start-up baseline: synthesis got much slower (ordinary load moves it by
/// well under 1.5×).
pub(crate) const COST_RISE: f64 = 2.0;
/// Less synthesis-step time than this in the window is too little to
/// judge the CPU share from, seconds.
pub(crate) const MIN_STEP_SECONDS: f64 = 0.5;
/// A deep ping's round trip to the worker above this is slow, ms (the
/// gRPC health call itself takes under 2 ms on a LAN).
pub(crate) const SLOW_PING_MS: f64 = 50.0;
/// A median deep ping above this is a critical delay, ms: real-time
/// frames already wait longer than a 250 ms jitter buffer.
pub(crate) const CRITICAL_PING_MS: f64 = 250.0;
/// Without deep pings: worker → orchestrator frame latency p95 above
/// this is slow, seconds.
pub(crate) const SLOW_HOP_S: f64 = 0.1;
/// Total backpressure waits per second of window above which clients are
/// reading slowly (informational unless streams were ended).
pub(crate) const BACKPRESSURE_SHARE: f64 = 0.5;
/// A worker that refused at least this share of the requests that ended
/// in the window (and at least `MIN_REFUSALS` of them) is full, however
/// low its utilisation reads between refusals: a burst of new streams
/// makes a few refusals, not a quarter.
pub(crate) const REFUSED_SHARE: f64 = 0.25;
/// Fewer refusals than this are never "full" on their own.
pub(crate) const MIN_REFUSALS: f64 = 3.0;
/// Late frames above this share of those sent: listeners hear gaps.
pub(crate) const LATE_SHARE: f64 = 0.01;
/// A Redis PING slower than this is degraded, ms.
pub(crate) const SLOW_REDIS_MS: f64 = 100.0;

/// Every rule, in no particular order (the caller sorts).
pub(crate) fn all(f: &Figures) -> Vec<Finding> {
    let per_worker = f.workers.iter().flat_map(|w| {
        [
            worker_down(f, w),
            worker_stalled(f, w),
            cpu_starved(w),
            worker_saturated(w),
            audio_quality(w),
        ]
        .into_iter()
        .flatten()
    });
    let mut findings: Vec<Finding> = per_worker.collect();
    findings.extend(network_latency(f));
    findings.extend(frame_corruption(f));
    findings.extend(client_slow(f));
    findings.extend(redis_degraded(f));
    findings.extend(admission_refusing(f));
    findings
}

fn evidence(metric: impl Into<String>, value: f64, expected: impl Into<String>) -> Evidence {
    Evidence {
        metric: metric.into(),
        value: (value * 1e4).round() / 1e4,
        expected: expected.into(),
    }
}

/// `worker_down` (worker): unreachable, not serving, or its breaker open.
/// A worker whose port accepts connections but says nothing is stalled,
/// not down.
pub(crate) fn worker_down(f: &Figures, w: &Worker) -> Option<Finding> {
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

/// `worker_stalled` (worker): no progress though the connection is up: a
/// port that accepts but does not answer, synthesis threads the watchdog
/// reports, or streams open without a frame in the window.
pub(crate) fn worker_stalled(f: &Figures, w: &Worker) -> Option<Finding> {
    let (summary, e, certainty) = match (&w.reach, &w.metrics) {
        (Reach::Silent(detail), _) => (
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
        ),
        (_, Some(m)) if m.threads_stalled > 0.0 || m.stalls > 0.0 => (
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
        ),
        (_, Some(m))
            if m.inflight_start > 0.0
                && m.inflight_end > 0.0
                && m.frames_ok == 0.0
                && f.window_s >= 2.0 =>
        {
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
fn cost_rise(m: &WorkerMetrics) -> Option<f64> {
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
/// worker gets its CPU (otherwise it is `cpu_starved`). Refusals well
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
    if !(near || m.refused > 0.0 || late_share >= LATE_SHARE) {
        return None;
    }
    let severity = if late_share >= LATE_SHARE {
        Severity::Critical
    } else if near {
        Severity::Warning
    } else {
        Severity::Info
    };
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
            format!("< {LATE_SHARE}"),
        ),
    ];
    if let Some(share) = cpu_share(w, m) {
        e.push(evidence(
            "rate(process_cpu_seconds_total) / rate(tts_worker_step_seconds_sum)",
            share,
            "about 1: the steps have their CPU, so this is load, not starvation",
        ));
    }
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
    let mut findings: Vec<Finding> = f
        .workers
        .iter()
        .filter_map(|w| {
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
        })
        .collect();
    let bad: f64 = o.link_bad.iter().map(|(_, n)| n).sum();
    if bad > 0.0 {
        let list = o
            .link_bad
            .iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(r, n)| format!("{n} {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        findings.push(Finding {
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
        });
    }
    if o.cache_bad > 0.0 {
        findings.push(Finding {
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
        });
    }
    findings
}

/// `client_slow` (client): clients read slower than audio is produced:
/// streams ended `client_too_slow` (a warning), or long waits on full
/// client queues alone (informational: a fast download fills its queue
/// by design).
pub(crate) fn client_slow(f: &Figures) -> Option<Finding> {
    let o = f.orchestrator.as_ref()?;
    let held = o.backpressure.sum / f.window_s.max(1.0);
    let full = o.client_queue.share_above(33.0).unwrap_or(0.0);
    let severity = if o.client_too_slow > 0.0 {
        Severity::Warning
    } else if held >= BACKPRESSURE_SHARE {
        Severity::Info
    } else {
        return None;
    };
    Some(Finding {
        cause: Cause::ClientSlow,
        hop: Hop::Client,
        severity,
        summary: format!(
            "Clients read slower than their audio is produced: {} stream(s) were ended for not reading, and relays waited {:.1} s per second for room in full client queues.",
            o.client_too_slow, held
        ),
        evidence: vec![
            evidence("tts_orchestrator_requests_total{code=\"client_too_slow\"} (window)", o.client_too_slow, "0"),
            evidence("rate(tts_orchestrator_backpressure_wait_seconds_sum)", held, format!("< {BACKPRESSURE_SHARE}")),
            evidence("share of tts_orchestrator_client_queue_frames samples above 33", full, "small"),
        ],
        action: "The fix is in the clients: read the socket as fast as audio plays (a playback buffer, not a blocking writer); the server ends a stream its client does not read for --stalled-stream-secs, and others are not affected.".into(),
        certainty: if o.client_too_slow > 0.0 { 0.9 } else { 0.5 },
        runbook: String::new(),
    })
}

/// `redis_degraded` (redis): the orchestrator's readiness check of Redis
/// fails, the doctor's own PING fails or is slow, or cache lookups fail.
pub(crate) fn redis_degraded(f: &Figures) -> Option<Finding> {
    let r = &f.redis;
    let mut e = Vec::new();
    let mut why = Vec::new();
    if let Some((status, detail)) = &r.ready
        && status != "ok"
    {
        why.push(format!("the orchestrator's check says {detail}"));
        e.push(evidence("ready:checks.redis", 0.0, "ok"));
    }
    match &r.ping {
        Some(Err(reason)) => {
            why.push(format!("PING failed ({reason})"));
            e.push(evidence("doctor:redis_ping_ok", 0.0, "1"));
        }
        Some(Ok(ms)) if *ms >= SLOW_REDIS_MS => {
            why.push(format!("PING took {ms:.0} ms"));
            e.push(evidence(
                "doctor:redis_ping_ms",
                *ms,
                format!("< {SLOW_REDIS_MS}"),
            ));
        }
        _ => {}
    }
    if let Some(o) = &f.orchestrator
        && o.cache_errors > 0.0
    {
        why.push(format!(
            "{} of {} phrase-cache lookups failed",
            o.cache_errors, o.cache_lookups
        ));
        e.push(evidence(
            "tts_orchestrator_phrase_cache_lookups_total{result=\"error\"} (window)",
            o.cache_errors,
            "0",
        ));
    }
    if why.is_empty() {
        return None;
    }
    Some(Finding {
        cause: Cause::RedisDegraded,
        hop: Hop::Redis,
        severity: Severity::Warning,
        summary: format!(
            "Redis{} is degraded: {}.",
            r.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default(),
            why.join("; ")
        ),
        evidence: e,
        action: "Check the Redis server (`doctor redis`: slow log, memory, clients; is it running?); meanwhile static workers serve, registry workers expire and the phrase cache is skipped.".into(),
        certainty: if r.ping.as_ref().is_some_and(Result::is_err) { 0.9 } else { 0.7 },
        runbook: String::new(),
    })
}

/// `admission_refusing` (orchestrator): requests or connections refused
/// by limits (per-address rate, connection caps), not for lack of compute.
pub(crate) fn admission_refusing(f: &Figures) -> Option<Finding> {
    let o = f.orchestrator.as_ref()?;
    if o.rate_limited == 0.0 && o.connections_refused == 0.0 {
        return None;
    }
    Some(Finding {
        cause: Cause::AdmissionRefusing,
        hop: Hop::Orchestrator,
        severity: Severity::Warning,
        summary: format!(
            "The orchestrator's limits refused {} request(s) (rate_limited) and {} connection(s) in the window; this is policy, not a lack of compute.",
            o.rate_limited, o.connections_refused
        ),
        evidence: vec![
            evidence("tts_orchestrator_requests_total{code=\"rate_limited\"} (window)", o.rate_limited, "0"),
            evidence("tts_orchestrator_connections_refused_total{reason=~\"capacity|per_address\"} (window)", o.connections_refused, "0"),
        ],
        action: "If the traffic is legitimate, raise --requests-per-second-per-address, --max-connections-per-address or --max-connections; otherwise find the client that floods (`doctor timeline --marked`).".into(),
        certainty: 0.8,
        runbook: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::figures::{Orchestrator, Redis};
    use super::*;
    use crate::doctor::prom::Histogram;

    fn worker(m: WorkerMetrics) -> Worker {
        Worker {
            url: "http://w:7001".into(),
            device: "cpu".into(),
            reach: Reach::Answers,
            metrics: Some(m),
            serving: Some(true),
            breaker: Some("closed".into()),
        }
    }

    fn busy(cpu_seconds: f64, cost_now: f64) -> WorkerMetrics {
        WorkerMetrics {
            step: Histogram {
                buckets: vec![(f64::INFINITY, 100.0)],
                sum: 8.0,
                count: 100.0,
            },
            cpu_seconds,
            cost: Some((cost_now, 0.05)),
            utilisation: 0.3,
            limit: Some(0.8),
            // As many 20 ms frames as 8 s of steps make at this cost.
            frames_ok: 8.0 / cost_now / 0.02,
            engine: Some("piper".into()),
            ..WorkerMetrics::default()
        }
    }

    fn figures(workers: Vec<Worker>) -> Figures {
        Figures {
            window_s: 10.0,
            orchestrator: Some(Orchestrator::default()),
            workers,
            ..Figures::default()
        }
    }

    #[test]
    fn a_healthy_window_has_no_finding() {
        let f = figures(vec![worker(busy(8.5, 0.055))]);
        assert!(all(&f).is_empty(), "{:?}", all(&f));
        let idle = figures(vec![worker(WorkerMetrics::default())]);
        assert!(all(&idle).is_empty());
    }

    #[test]
    fn little_cpu_for_slow_steps_is_starvation_not_saturation() {
        let mut m = busy(2.0, 0.2);
        m.utilisation = 0.78;
        m.refused = 3.0;
        let w = worker(m);
        let starved = cpu_starved(&w).expect("starved");
        assert_eq!(
            (starved.cause, starved.hop),
            (Cause::CpuStarved, Hop::Worker)
        );
        assert_eq!(starved.severity, Severity::Critical, "it refused requests");
        assert!(
            worker_saturated(&w).is_none(),
            "starvation explains the load"
        );
        // The same utilisation with the CPU to match is saturation.
        let mut loaded = busy(8.0, 0.06);
        loaded.utilisation = 0.78;
        loaded.refused = 3.0;
        let w = worker(loaded);
        assert!(cpu_starved(&w).is_none());
        let saturated = worker_saturated(&w).expect("saturated");
        assert_eq!(saturated.severity, Severity::Warning, "no deadline missed");
        // Mostly refused is full even at a low reading.
        let mut full = busy(8.0, 0.06);
        (full.refused, full.requests) = (40.0, 45.0);
        let found = worker_saturated(&worker(full)).expect("full");
        assert_eq!(found.severity, Severity::Warning);
        // Refusals far below the limit, frames on time: a burst kept out.
        let mut burst = busy(8.0, 0.06);
        (burst.refused, burst.requests) = (2.0, 6.0);
        burst.playout_misses = 2.0;
        let found = worker_saturated(&worker(burst.clone())).expect("noted");
        assert_eq!(found.severity, Severity::Info);
        // Many late frames are critical wherever utilisation stands.
        burst.playout_misses = 200.0;
        let found = worker_saturated(&worker(burst)).expect("late");
        assert_eq!(found.severity, Severity::Critical);
    }

    #[test]
    fn the_window_s_own_cost_counts_once_enough_audio_was_sent() {
        let mut m = busy(2.0, 0.06);
        assert!((cost_rise(&m).expect("rise") - 1.2).abs() < 1e-9);
        // Steps took 4× as long for the same audio: the estimate lags.
        m.step.sum *= 4.0;
        assert!((cost_rise(&m).expect("rise") - 4.8).abs() < 1e-9);
        // Too little audio sent: the estimate it is.
        m.frames_ok = 50.0;
        assert!((cost_rise(&m).expect("rise") - 1.2).abs() < 1e-9);
    }

    #[test]
    fn starvation_needs_both_little_cpu_and_a_cost_rise_and_enough_work() {
        assert!(
            cpu_starved(&worker(busy(2.0, 0.06))).is_none(),
            "cost as usual"
        );
        assert!(
            cpu_starved(&worker(busy(7.0, 0.2))).is_none(),
            "the CPU was there"
        );
        let mut little = busy(0.1, 0.2);
        little.step.sum = 0.2;
        assert!(
            cpu_starved(&worker(little)).is_none(),
            "too little to judge"
        );
        let mut gpu = worker(busy(2.0, 0.2));
        gpu.device = "cuda:0".into();
        assert!(
            cpu_starved(&gpu).is_none(),
            "a GPU worker waits for its GPU"
        );
    }

    #[test]
    fn a_silent_worker_is_stalled_and_not_down_and_no_link_is_blamed() {
        let mut w = worker(WorkerMetrics::default());
        w.metrics = None;
        w.reach = Reach::Silent("accepts".into());
        w.breaker = Some("open".into());
        let mut f = figures(vec![w.clone()]);
        f.ping_ms = vec![];
        assert_eq!(
            worker_stalled(&f, &w).map(|x| x.cause),
            Some(Cause::WorkerStalled)
        );
        assert!(worker_down(&f, &w).is_none());
        f.ping_ms = vec![900.0, 900.0, 900.0];
        assert!(network_latency(&f).is_none());
    }

    #[test]
    fn stalled_threads_or_frozen_streams_are_stalls() {
        let mut m = busy(8.0, 0.05);
        m.threads_stalled = 1.0;
        let f = figures(vec![]);
        assert!(worker_stalled(&f, &worker(m)).is_some());
        let frozen = WorkerMetrics {
            inflight_start: 2.0,
            inflight_end: 2.0,
            frames_ok: 0.0,
            ..WorkerMetrics::default()
        };
        assert!(worker_stalled(&f, &worker(frozen.clone())).is_some());
        let moving = WorkerMetrics {
            frames_ok: 10.0,
            ..frozen
        };
        assert!(worker_stalled(&f, &worker(moving)).is_none());
    }

    #[test]
    fn an_unreachable_worker_is_down_critically_only_when_it_was_the_last() {
        let mut down = worker(WorkerMetrics::default());
        down.reach = Reach::Unreachable("refused".into());
        down.serving = None;
        let f = figures(vec![down.clone()]);
        let finding = worker_down(&f, &down).expect("down");
        assert_eq!(finding.severity, Severity::Critical);
        let mut other = worker(WorkerMetrics::default());
        other.url = "http://w2:7001".into();
        let f = figures(vec![down.clone(), other]);
        assert_eq!(
            worker_down(&f, &down).map(|x| x.severity),
            Some(Severity::Warning)
        );
    }

    #[test]
    fn slow_deep_pings_are_the_link_and_fast_ones_are_not() {
        let mut f = figures(vec![worker(busy(8.0, 0.05))]);
        f.ping_ms = vec![1.0, 1.2, 0.9];
        assert!(network_latency(&f).is_none());
        f.ping_ms = vec![160.0, 155.0, 170.0, 1.0];
        let finding = network_latency(&f).expect("slow link");
        assert_eq!(
            (finding.cause, finding.hop),
            (Cause::NetworkLatency, Hop::WorkerLink)
        );
        assert_eq!(finding.severity, Severity::Warning);
        f.ping_ms = vec![400.0, 410.0];
        assert_eq!(
            network_latency(&f).map(|x| x.severity),
            Some(Severity::Critical)
        );
    }

    #[test]
    fn without_pings_slow_frames_count_only_when_no_client_holds_them_up() {
        let mut o = Orchestrator {
            hop_latency: Histogram {
                buckets: vec![(0.01, 10.0), (0.17, 100.0), (f64::INFINITY, 100.0)],
                sum: 12.0,
                count: 100.0,
            },
            ..Orchestrator::default()
        };
        let mut f = figures(vec![]);
        f.orchestrator = Some(o.clone());
        assert!(network_latency(&f).is_some());
        o.client_too_slow = 1.0;
        f.orchestrator = Some(o);
        assert!(network_latency(&f).is_none(), "a slow client explains it");
    }

    #[test]
    fn corrupted_frames_name_the_hop_they_crossed() {
        let mut f = figures(vec![]);
        f.orchestrator = Some(Orchestrator {
            link_bad: vec![
                ("checksum_mismatch", 2.0),
                ("bad_size", 0.0),
                ("out_of_sequence", 1.0),
            ],
            cache_bad: 1.0,
            link_ok: 500.0,
            ..Orchestrator::default()
        });
        let found = frame_corruption(&f);
        let hops: Vec<Hop> = found.iter().map(|x| x.hop).collect();
        assert_eq!(hops, vec![Hop::WorkerLink, Hop::Redis]);
        assert!(
            found[0]
                .summary
                .contains("2 checksum_mismatch, 1 out_of_sequence"),
            "{}",
            found[0].summary
        );
    }

    #[test]
    fn client_too_slow_warns_and_backpressure_alone_informs() {
        let mut f = figures(vec![]);
        let mut o = Orchestrator {
            backpressure: Histogram {
                buckets: vec![(f64::INFINITY, 10.0)],
                sum: 6.0,
                count: 10.0,
            },
            ..Orchestrator::default()
        };
        f.orchestrator = Some(o.clone());
        assert_eq!(client_slow(&f).map(|x| x.severity), Some(Severity::Info));
        o.client_too_slow = 2.0;
        f.orchestrator = Some(o);
        assert_eq!(client_slow(&f).map(|x| x.severity), Some(Severity::Warning));
    }

    #[test]
    fn quality_events_and_limits_and_redis() {
        let mut m = busy(8.0, 0.05);
        m.quality = vec![("clipping", 3.0), ("leading_silence", 1.0)];
        let q = audio_quality(&worker(m)).expect("quality");
        assert!(q.summary.contains("3 clipping") && !q.summary.contains("leading"));
        let mut f = figures(vec![]);
        f.orchestrator = Some(Orchestrator {
            rate_limited: 5.0,
            ..Orchestrator::default()
        });
        assert_eq!(
            admission_refusing(&f).map(|x| x.hop),
            Some(Hop::Orchestrator)
        );
        f.redis = Redis {
            url: Some("redis://h:6379".into()),
            ready: Some(("warn".into(), "redis: connection refused".into())),
            ping: Some(Err("refused".into())),
        };
        let r = redis_degraded(&f).expect("redis");
        assert_eq!((r.cause, r.hop), (Cause::RedisDegraded, Hop::Redis));
        f.redis.ready = Some(("ok".into(), "PING → PONG".into()));
        f.redis.ping = Some(Ok(0.4));
        assert!(redis_degraded(&f).is_none());
    }
}
