//! The rules against hand-made windows.

use super::super::figures::{Figures, Orchestrator, Redis, Worker, WorkerMetrics};
use super::super::observe::Reach;
use super::super::{Cause, Hop, Severity};
use super::worker::cost_rise;
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
    // A handful of late frames in a short window is a hiccup, however
    // large their share of its few frames.
    (burst.playout_misses, burst.frames_ok) = (5.0, 370.0);
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

#[test]
fn a_call_model_far_from_its_calls_is_reported_with_its_direction() {
    let with = |ratio: f64, late: f64| {
        worker(WorkerMetrics {
            call_model: Some(("gpu".into(), ratio)),
            playout_misses: late,
            ..busy(8.5, 0.055)
        })
    };
    assert!(cost_model_off(&with(1.2, 0.0)).is_none(), "close enough");
    assert!(cost_model_off(&with(0.8, 0.0)).is_none());
    let slow = cost_model_off(&with(2.0, 0.0)).expect("too slow");
    assert_eq!((slow.cause, slow.hop), (Cause::CostModelOff, Hop::Worker));
    assert_eq!(slow.severity, Severity::Warning);
    assert!(slow.summary.contains("admits more"), "{}", slow.summary);
    let late = cost_model_off(&with(2.0, 40.0)).expect("too slow");
    assert_eq!(late.severity, Severity::Critical, "frames were late");
    let fast = cost_model_off(&with(0.5, 0.0)).expect("too fast");
    assert!(fast.summary.contains("refuses"), "{}", fast.summary);
    // A worker that does not batch exports no ratio.
    assert!(cost_model_off(&worker(busy(8.5, 0.055))).is_none());
}
