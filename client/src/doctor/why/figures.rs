//! The observed window reduced to the figures the rules judge: what each
//! counter and histogram did between the window's two ends (not totals
//! since start-up), and the gauges and probes at its end.

use serde_json::Value;

use super::observe::{Observation, Reach, Scrapes};
use crate::doctor::prom::{Exposition, Histogram};

/// A counter's change over the window (a restart, where the value fell,
/// counts from zero).
fn delta(s: &Scrapes, name: &str, filter: &[(&str, &str)]) -> f64 {
    let (Some(start), Some(end)) = (&s.start, &s.end) else {
        return 0.0;
    };
    // Series by series: one that restarted does not hide another's growth.
    end.select(name, filter)
        .map(|later| {
            let before = start
                .select(name, filter)
                .find(|earlier| earlier.labels == later.labels)
                .map_or(0.0, |earlier| earlier.value);
            if later.value >= before {
                later.value - before
            } else {
                later.value
            }
        })
        .sum()
}

/// A histogram's observations over the window.
fn window(s: &Scrapes, name: &str, filter: &[(&str, &str)]) -> Histogram {
    let (Some(start), Some(end)) = (&s.start, &s.end) else {
        return Histogram::default();
    };
    match (end.histogram(name, filter), start.histogram(name, filter)) {
        (Some(later), Some(earlier)) => later.since(&earlier),
        (Some(later), None) => later,
        _ => Histogram::default(),
    }
}

/// A gauge at the window's end (its largest series).
fn gauge(e: Option<&Exposition>, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    e?.max(name, filter)
}

/// The orchestrator's side of the window.
#[derive(Debug, Default, Clone)]
pub(crate) struct Orchestrator {
    pub(crate) worker_unavailable: f64,
    pub(crate) rate_limited: f64,
    pub(crate) client_too_slow: f64,
    /// TCP connections refused by `--max-connections` or the per-address cap.
    pub(crate) connections_refused: f64,
    /// Frames from workers that failed their checks, by result.
    pub(crate) link_bad: Vec<(&'static str, f64)>,
    /// Frames replayed from the phrase cache that failed their checks.
    pub(crate) cache_bad: f64,
    /// Frames from workers that passed.
    pub(crate) link_ok: f64,
    pub(crate) hop_latency: Histogram,
    pub(crate) backpressure: Histogram,
    pub(crate) client_queue: Histogram,
    pub(crate) cache_errors: f64,
    pub(crate) cache_lookups: f64,
}

/// One worker's side of the window.
#[derive(Debug, Default, Clone)]
pub(crate) struct WorkerMetrics {
    /// Requests that ended (all outcomes, refusals included).
    pub(crate) requests: f64,
    pub(crate) refused: f64,
    pub(crate) playout_misses: f64,
    pub(crate) first_audio_misses: f64,
    pub(crate) frames_ok: f64,
    pub(crate) frames_bad: f64,
    pub(crate) quality: Vec<(&'static str, f64)>,
    pub(crate) step: Histogram,
    /// CPU seconds the process used.
    pub(crate) cpu_seconds: f64,
    /// The highest admission utilisation seen in the window.
    pub(crate) utilisation: f64,
    pub(crate) limit: Option<f64>,
    pub(crate) inflight_start: f64,
    pub(crate) inflight_end: f64,
    /// Compute per audio second now, and at start-up, of the voice whose
    /// estimate rose most.
    pub(crate) cost: Option<(f64, f64)>,
    pub(crate) threads_stalled: f64,
    pub(crate) stalls: f64,
    /// The default voice's engine (`piper`, `espeak`, `fixed-cost`).
    pub(crate) engine: Option<String>,
    /// A batching worker's voice whose recent calls took furthest from
    /// what its call model predicted, with the ratio (1: exact).
    pub(crate) call_model: Option<(String, f64)>,
}

/// One worker.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) url: String,
    pub(crate) device: String,
    pub(crate) reach: Reach,
    /// Its metrics over the window, when both scrapes answered.
    pub(crate) metrics: Option<WorkerMetrics>,
    /// Serving, by its own `GetLoad`.
    pub(crate) serving: Option<bool>,
    /// Its breaker at the orchestrator: `closed`, `half_open`, `open`.
    pub(crate) breaker: Option<String>,
}

/// Redis, as the orchestrator and the doctor see it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Redis {
    pub(crate) url: Option<String>,
    /// `/ready`'s redis check: its status and detail.
    pub(crate) ready: Option<(String, String)>,
    /// The doctor's own PING: ms, or why not.
    pub(crate) ping: Option<Result<f64, String>>,
}

/// Everything the rules judge.
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures {
    pub(crate) window_s: f64,
    /// `None` when the orchestrator's metrics could not be read at both ends.
    pub(crate) orchestrator: Option<Orchestrator>,
    pub(crate) workers: Vec<Worker>,
    /// Deep pings the workers answered: their round trips, ms.
    pub(crate) ping_ms: Vec<f64>,
    pub(crate) redis: Redis,
    /// Faults injected now (from `/ready`): kind and a short description.
    pub(crate) faults: Vec<(String, String)>,
}

const BAD_RESULTS: [&str; 3] = ["checksum_mismatch", "bad_size", "out_of_sequence"];
const QUALITY: [&str; 4] = ["clipping", "dc_offset", "dead_air", "leading_silence"];

impl Figures {
    /// Reduces an observation.
    pub(crate) fn of(o: &Observation) -> Self {
        let ready = o.ready.as_ref();
        Self {
            window_s: o.window.as_secs_f64(),
            orchestrator: orchestrator(&o.orchestrator),
            workers: o
                .workers
                .iter()
                .map(|w| Worker {
                    url: w.url.clone(),
                    device: w.device.clone(),
                    reach: w.reach.clone(),
                    metrics: worker_metrics(&w.metrics).map(|mut m| {
                        m.utilisation = m.utilisation.max(w.peak_utilisation.unwrap_or(0.0));
                        m
                    }),
                    serving: w.load.as_ref().ok().map(|l| l.serving),
                    breaker: ready.and_then(|r| breaker(r, &w.url)),
                })
                .collect(),
            ping_ms: o.pings.iter().filter_map(|p| p.worker_ms).collect(),
            redis: Redis {
                url: o.redis.as_ref().map(|(url, _)| url.clone()),
                ready: ready.and_then(|r| {
                    let c = r["checks"].get("redis")?;
                    Some((
                        c["status"].as_str()?.to_owned(),
                        c["detail"].as_str().unwrap_or_default().to_owned(),
                    ))
                }),
                ping: o.redis.as_ref().map(|(_, p)| p.clone()),
            },
            faults: ready.map(faults).unwrap_or_default(),
        }
    }
}

fn orchestrator(s: &Scrapes) -> Option<Orchestrator> {
    s.start.as_ref()?;
    s.end.as_ref()?;
    const FRAMES: &str = "tts_orchestrator_frames_total";
    const REQUESTS: &str = "tts_orchestrator_requests_total";
    let link = |result| {
        delta(
            s,
            FRAMES,
            &[("hop", "worker_to_orchestrator"), ("result", result)],
        )
    };
    let lookups = "tts_orchestrator_phrase_cache_lookups_total";
    Some(Orchestrator {
        worker_unavailable: delta(s, REQUESTS, &[("code", "worker_unavailable")]),
        rate_limited: delta(s, REQUESTS, &[("code", "rate_limited")]),
        client_too_slow: delta(s, REQUESTS, &[("code", "client_too_slow")]),
        connections_refused: ["capacity", "per_address"]
            .iter()
            .map(|r| {
                delta(
                    s,
                    "tts_orchestrator_connections_refused_total",
                    &[("reason", r)],
                )
            })
            .sum(),
        link_bad: BAD_RESULTS.iter().map(|r| (*r, link(r))).collect(),
        cache_bad: BAD_RESULTS
            .iter()
            .map(|r| {
                delta(
                    s,
                    FRAMES,
                    &[("hop", "phrase_cache_to_orchestrator"), ("result", r)],
                )
            })
            .sum(),
        link_ok: link("ok"),
        hop_latency: window(s, "tts_orchestrator_worker_hop_latency_seconds", &[]),
        backpressure: window(s, "tts_orchestrator_backpressure_wait_seconds", &[]),
        client_queue: window(s, "tts_orchestrator_client_queue_frames", &[]),
        cache_errors: delta(s, lookups, &[("result", "error")]),
        cache_lookups: delta(s, lookups, &[]),
    })
}

fn worker_metrics(s: &Scrapes) -> Option<WorkerMetrics> {
    let end = s.end.as_ref()?;
    let start = s.start.as_ref()?;
    const MISSES: &str = "tts_worker_deadline_misses_total";
    let bad: f64 = BAD_RESULTS
        .iter()
        .map(|r| delta(s, "tts_worker_frames_total", &[("result", r)]))
        .sum();
    // The voice whose estimate rose most against its start-up baseline,
    // among those that synthesised in the window (their estimate moved):
    // the window's step time per audio second is theirs, and a voice that
    // was not used has its own, unrelated baseline.
    const COST: &str = "tts_worker_compute_per_audio_second";
    let voices: Vec<(f64, f64, bool)> = end
        .select(COST, &[])
        .filter_map(|now| {
            let voice = now.label("voice")?;
            let base = end.max(
                "tts_worker_compute_per_audio_second_baseline",
                &[("voice", voice)],
            )?;
            let moved = start.max(COST, &[("voice", voice)]) != Some(now.value);
            (base > 0.0).then_some((now.value, base, moved))
        })
        .collect();
    let used = voices.iter().any(|v| v.2);
    let cost = voices
        .into_iter()
        .filter(|v| v.2 || !used)
        .map(|(now, base, _)| (now, base))
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    Some(WorkerMetrics {
        requests: delta(s, "tts_worker_requests_total", &[]),
        refused: delta(s, "tts_worker_requests_total", &[("outcome", "refused")]),
        playout_misses: delta(s, MISSES, &[("kind", "playout")]),
        first_audio_misses: delta(s, MISSES, &[("kind", "first_audio")]),
        frames_ok: delta(s, "tts_worker_frames_total", &[("result", "ok")]),
        frames_bad: bad,
        quality: QUALITY
            .iter()
            .map(|k| {
                let n = delta(s, "tts_worker_frame_quality_events_total", &[("kind", k)]);
                (*k, n)
            })
            .collect(),
        step: window(s, "tts_worker_step_seconds", &[]),
        cpu_seconds: delta(s, "process_cpu_seconds_total", &[]),
        utilisation: gauge(Some(end), "tts_worker_admission_utilisation", &[])
            .unwrap_or(0.0)
            .max(0.0),
        limit: gauge(Some(end), "tts_worker_admission_limit", &[]),
        inflight_start: gauge(Some(start), "tts_worker_inflight_requests", &[]).unwrap_or(0.0),
        inflight_end: gauge(Some(end), "tts_worker_inflight_requests", &[]).unwrap_or(0.0),
        cost,
        threads_stalled: gauge(Some(end), "tts_worker_synthesis_threads_stalled", &[])
            .unwrap_or(0.0),
        stalls: delta(s, "tts_worker_synthesis_stalls_total", &[]),
        engine: end
            .select("tts_worker_build_info", &[])
            .find_map(|s| s.label("engine").map(str::to_owned)),
        call_model: end
            .select("tts_worker_call_observed_to_predicted_ratio", &[])
            .filter(|s| s.value.is_finite() && s.value > 0.0)
            .filter_map(|s| Some((s.label("voice")?.to_owned(), s.value)))
            .max_by(|a, b| a.1.ln().abs().total_cmp(&b.1.ln().abs())),
    })
}

/// A worker's breaker as `/ready` lists it.
fn breaker(ready: &Value, url: &str) -> Option<String> {
    ready["workers"]
        .as_array()?
        .iter()
        .find(|w| w["url"] == url)?["breaker"]
        .as_str()
        .map(str::to_owned)
}

/// `/ready`'s `fault_injection`: each fault's kind and parameters.
fn faults(ready: &Value) -> Vec<(String, String)> {
    ready["fault_injection"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let kind = f["kind"].as_str()?.to_owned();
            let mut params = f.as_object()?.clone();
            for k in [
                "kind",
                "id",
                "started",
                "component",
                "remaining_s",
                "worker",
            ] {
                params.remove(k);
            }
            Some((kind, Value::Object(params).to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrapes(start: &str, end: &str) -> Scrapes {
        Scrapes {
            start: Some(Exposition::parse(start).expect("start")),
            end: Some(Exposition::parse(end).expect("end")),
            error: None,
        }
    }

    #[test]
    fn counters_change_over_the_window_and_a_restart_counts_from_zero() {
        let s = scrapes(
            "tts_orchestrator_requests_total{outcome=\"failed\",code=\"worker_unavailable\"} 5\n\
             tts_orchestrator_requests_total{outcome=\"completed\",code=\"none\"} 100\n",
            "tts_orchestrator_requests_total{outcome=\"failed\",code=\"worker_unavailable\"} 7\n\
             tts_orchestrator_requests_total{outcome=\"completed\",code=\"none\"} 3\n",
        );
        let o = orchestrator(&s).expect("both ends");
        assert_eq!(o.worker_unavailable, 2.0);
        // 100 → 3: that series restarted; 3 happened since, and the
        // other series' 2 still count.
        assert_eq!(delta(&s, "tts_orchestrator_requests_total", &[]), 2.0 + 3.0);
        assert!(orchestrator(&Scrapes::default()).is_none());
    }

    #[test]
    fn a_worker_s_cost_is_compared_with_its_own_baseline() {
        let text = |cpu: f64, now_joe: f64| {
            format!(
                "process_cpu_seconds_total {cpu}\n\
                 tts_worker_compute_per_audio_second{{voice=\"joe\"}} {now_joe}\n\
                 tts_worker_compute_per_audio_second_baseline{{voice=\"joe\"}} 0.05\n\
                 tts_worker_compute_per_audio_second{{voice=\"espeak-en-us\"}} 0.002\n\
                 tts_worker_compute_per_audio_second_baseline{{voice=\"espeak-en-us\"}} 0.002\n\
                 tts_worker_admission_utilisation 0.3\ntts_worker_admission_limit 0.8\n\
                 tts_worker_build_info{{version=\"0.1.0\",engine=\"piper\"}} 1\n"
            )
        };
        let m = worker_metrics(&scrapes(&text(10.0, 0.05), &text(12.5, 0.2))).expect("metrics");
        assert_eq!(m.cpu_seconds, 2.5);
        assert_eq!(m.cost, Some((0.2, 0.05)));
        assert_eq!((m.utilisation, m.limit), (0.3, Some(0.8)));
        assert_eq!(m.engine.as_deref(), Some("piper"));
        // Joe spoke and got a little cheaper; espeak-ng did not speak: its
        // baseline says nothing about the window's steps.
        let m = worker_metrics(&scrapes(&text(10.0, 0.05), &text(12.5, 0.045))).expect("metrics");
        assert_eq!(m.cost, Some((0.045, 0.05)));
    }

    #[test]
    fn ready_gives_breakers_and_faults() {
        let ready = serde_json::json!({
            "workers": [{"url": "http://w:1", "breaker": "open"}],
            "fault_injection": [{"component": "worker", "kind": "slowdown", "factor": 4.0, "remaining_s": 3.0}]
        });
        assert_eq!(breaker(&ready, "http://w:1").as_deref(), Some("open"));
        assert_eq!(breaker(&ready, "http://other:1"), None);
        let f = faults(&ready);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "slowdown");
        assert!(f[0].1.contains("\"factor\":4.0"), "{}", f[0].1);
    }
}
