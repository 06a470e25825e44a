//! The process-wide Prometheus recorder. Every histogram gets explicit
//! buckets (a histogram without buckets would be rendered as a summary,
//! which cannot be aggregated), chosen by the metric name's unit suffix,
//! with boundaries at the targets (20 ms frames, 25/40 ms gaps, 170/500 ms
//! first audio).

use std::future::Future;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Buckets for latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 0.17, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// Buckets for real-time factors (compute time ÷ audio time).
pub const RTF_BUCKETS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0];
/// Buckets for queue depths, in frames.
pub const FRAME_COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 16.0, 25.0, 33.0, 50.0, 100.0, 200.0,
];
/// Buckets for slack (time to spare before a deadline; negative when
/// late), in seconds.
pub const SLACK_BUCKETS: &[f64] = &[
    -1.0, -0.25, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];
/// Histograms whose buckets are not chosen by unit suffix (full names,
/// which take precedence over suffixes).
const BY_NAME: &[(&str, &[f64])] = &[
    ("tts_worker_step_slack_seconds", SLACK_BUCKETS),
    ("tts_worker_decoder_batch_size", BATCH_BUCKETS),
];
/// Buckets for batch sizes (items per call).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0];
/// Buckets for levels, in dB relative to full scale.
pub const DBFS_BUCKETS: &[f64] = &[
    -90.0, -60.0, -50.0, -40.0, -30.0, -20.0, -12.0, -6.0, -3.0, -1.0, 0.0,
];

/// Renders `/metrics`: the recorder's metrics, process metrics included
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, … from `metrics-process`, read at each scrape).
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    process: std::sync::Arc<metrics_process::Collector>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// The full text exposition.
    pub fn render(&self) -> String {
        self.process.collect();
        self.prometheus.run_upkeep();
        with_precise_cpu(self.prometheus.render(), cpu_seconds())
    }
}

/// The process's CPU time (user and system), to the microsecond.
fn cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// `metrics-process` records the CPU time through an integer counter, so
/// the standard `process_cpu_seconds_total` moves in whole seconds: too
/// coarse for a rate over a few seconds, which `doctor why` needs to tell
/// a starved worker from a busy one. The series keeps its name and type
/// and gets the exact value.
fn with_precise_cpu(text: String, seconds: Option<f64>) -> String {
    const SERIES: &str = "process_cpu_seconds_total ";
    let Some(seconds) = seconds else {
        return text;
    };
    let Some(at) = text
        .match_indices(SERIES)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
    else {
        return text;
    };
    let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
    format!("{}{SERIES}{seconds:.6}{}", &text[..at], &text[end..])
}

/// How often histogram samples are folded into their buckets when no one
/// scrapes (the exporter's own default for its HTTP listener).
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into
/// its buckets, which a scrape does; without one (Prometheus away, a demo,
/// a soak) that is memory growing with every frame. A thread of its own
/// does it every [`UPKEEP`], whatever the runtime is doing.
fn spawn_upkeep(handle: PrometheusHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(UPKEEP_THREAD.into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                handle.run_upkeep();
            }
        })
        .map(drop)
}

/// The upkeep thread's name (as `/proc/PID/task/*/comm` shows it).
pub const UPKEEP_THREAD: &str = "metrics-upkeep";

/// Installs the recorder for this process. Call once, from a binary (or a
/// test binary that checks metrics).
pub fn install_metrics() -> Result<MetricsHandle, String> {
    let suffixes: [(&str, &[f64]); 4] = [
        ("_seconds", LATENCY_BUCKETS),
        ("_real_time_factor", RTF_BUCKETS),
        ("_frames", FRAME_COUNT_BUCKETS),
        ("_dbfs", DBFS_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for &(name, buckets) in BY_NAME {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .map_err(|e| e.to_string())?;
    }
    for (suffix, buckets) in suffixes {
        builder = builder
            .set_buckets_for_metric(Matcher::Suffix(suffix.into()), buckets)
            .map_err(|e| e.to_string())?;
    }
    let prometheus = builder.install_recorder().map_err(|e| e.to_string())?;
    spawn_upkeep(prometheus.clone()).map_err(|e| e.to_string())?;
    let process = metrics_process::Collector::default();
    process.describe();
    crate::listener::describe();
    process.collect();
    Ok(MetricsHandle {
        prometheus,
        process: std::sync::Arc::new(process),
    })
}

/// The response of a `GET /metrics` route.
pub fn metrics_response(handle: &MetricsHandle) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Serves `GET /metrics`, and the `extra` routes beside it (a worker's
/// `/faults`, profiles), on `listener` within `limits` until `shutdown`
/// resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    handle: MetricsHandle,
    extra: Router,
    limits: crate::listener::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { metrics_response(&handle) }
            }),
        )
        .merge(extra);
    let stop = tokio_util::sync::CancellationToken::new();
    let gate = crate::listener::Gate::new(limits, crate::listener::admin_refused);
    let serving = crate::listener::serve(listener, app, gate, None, stop.clone());
    tokio::select! {
        () = serving => {}
        () = shutdown => stop.cancel(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_time_is_given_to_the_microsecond() {
        let text =
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2\nx_total 1\n";
        let precise = with_precise_cpu(text.to_owned(), Some(2.125_001));
        assert_eq!(
            precise,
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2.125001\nx_total 1\n"
        );
        assert_eq!(with_precise_cpu(text.to_owned(), None), text);
        assert_eq!(with_precise_cpu("x 1\n".into(), Some(1.0)), "x 1\n");
        let now = cpu_seconds().expect("getrusage");
        assert!(now > 0.0 && now.fract() != 0.0, "{now}");
    }
}
