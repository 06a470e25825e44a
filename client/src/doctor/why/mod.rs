//! `doctor why`: observes the running pipeline for a window and says what
//! is wrong, where, and what to do — the runbook's reasoning as a command.
//!
//! 1. [`observe`]: given only the orchestrator's admin address, finds the
//!    workers and Redis, scrapes every `/metrics` at both ends of the
//!    window (or queries a Prometheus server), reads `/ready` and each
//!    worker's `GetLoad`, probes the ports, and deep-pings through the
//!    orchestrator during the window.
//! 2. [`figures`]: reduces that to what changed in the window.
//! 3. [`rules`]: one small function per cause turns the figures into
//!    findings, each with its cause, hop, severity, evidence and action.
//!
//! Findings are ordered most severe, then most certain, first. A finding
//! whose cause an injected fault explains says so.

mod figures;
mod observe;
mod rules;

use std::time::Duration;

use serde::Serialize;

use super::{Findings, Status};
pub use observe::ObserveError;

/// What to observe, and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The orchestrator's admin base URL.
    pub orchestrator: String,
    /// How long to watch.
    pub window: Duration,
    /// A Prometheus server to take the window from instead of two scrapes.
    pub prometheus: Option<String>,
    /// The WebSocket URL for deep pings (default: the orchestrator's).
    pub ws_url: Option<String>,
    /// Redis (default: the orchestrator's).
    pub redis: Option<String>,
    /// The workers' bearer token, for `GetLoad`.
    pub worker_token: Option<String>,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Admitted work is at capacity.
    WorkerSaturated,
    /// Synthesis got slower for lack of CPU, not load.
    CpuStarved,
    /// A worker makes no progress though it is connected.
    WorkerStalled,
    /// A worker is unreachable, not serving, or its breaker is open.
    WorkerDown,
    /// The orchestrator–worker link is slow.
    NetworkLatency,
    /// Frames failed their checks on a hop.
    FrameCorruption,
    /// Clients read slower than audio is produced.
    ClientSlow,
    /// Clipping, DC offset or dead air in the engine's output.
    AudioQuality,
    /// Redis is slow or failing.
    RedisDegraded,
    /// Limits (not compute) refuse requests or connections.
    AdmissionRefusing,
    /// A batching worker's calls take much more or less than its call
    /// model predicts: admission works from wrong costs.
    CostModelOff,
}

impl Cause {
    /// The code, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkerSaturated => "worker_saturated",
            Self::CpuStarved => "cpu_starved",
            Self::WorkerStalled => "worker_stalled",
            Self::WorkerDown => "worker_down",
            Self::NetworkLatency => "network_latency",
            Self::FrameCorruption => "frame_corruption",
            Self::ClientSlow => "client_slow",
            Self::AudioQuality => "audio_quality",
            Self::RedisDegraded => "redis_degraded",
            Self::AdmissionRefusing => "admission_refusing",
            Self::CostModelOff => "cost_model_off",
        }
    }

    /// The injected fault kinds that produce this cause.
    fn fault_kinds(self) -> &'static [&'static str] {
        match self {
            Self::NetworkLatency => &["link_latency"],
            Self::FrameCorruption => &["corrupt_frames", "drop_frames"],
            Self::CpuStarved | Self::WorkerSaturated => &["slowdown"],
            Self::WorkerStalled => &["stall"],
            Self::AudioQuality => &["clipping", "dc_offset", "dead_air"],
            _ => &[],
        }
    }
}

/// Where it went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hop {
    /// The WebSocket or HTTP client.
    Client,
    /// The orchestrator itself.
    Orchestrator,
    /// The gRPC hop between orchestrator and worker.
    WorkerLink,
    /// A worker.
    Worker,
    /// Redis (registry, phrase cache).
    Redis,
}

impl Hop {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Orchestrator => "orchestrator",
            Self::WorkerLink => "worker-link",
            Self::Worker => "worker",
            Self::Redis => "redis",
        }
    }
}

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; not a problem.
    Info,
    /// A problem; the pipeline still serves.
    Warning,
    /// Listeners are affected now.
    Critical,
}

/// One figure behind a finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// The metric (or probe) and how it was read.
    pub metric: String,
    /// What it was.
    pub value: f64,
    /// What it is when all is well.
    pub expected: String,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What went wrong.
    pub cause: Cause,
    /// Where.
    pub hop: Hop,
    /// How bad.
    pub severity: Severity,
    /// One sentence.
    pub summary: String,
    /// The figures behind it.
    pub evidence: Vec<Evidence>,
    /// One sentence: what to do.
    pub action: String,
    /// The runbook section, `docs/runbook.md#<cause>`.
    pub runbook: String,
    /// How sure the rule is (0–1), for ordering; not shown.
    #[serde(skip)]
    pub certainty: f64,
}

/// The answer: `{"window_s", "healthy", "findings"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// How long was observed, seconds.
    pub window_s: f64,
    /// No warning or critical finding.
    pub healthy: bool,
    /// Most severe and most certain first.
    pub findings: Vec<Finding>,
}

/// Observes and diagnoses.
pub async fn run(opts: &Options) -> Result<Diagnosis, ObserveError> {
    let observation = observe::observe(opts).await?;
    let figures = figures::Figures::of(&observation);
    Ok(diagnose(&figures))
}

/// The findings the figures support, ordered, with injected faults named.
pub(crate) fn diagnose(figures: &figures::Figures) -> Diagnosis {
    let mut findings = rules::all(figures);
    for f in &mut findings {
        f.runbook = format!("docs/runbook.md#{}", f.cause.as_str());
        name_faults(f, &figures.faults);
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.certainty.total_cmp(&a.certainty))
    });
    Diagnosis {
        window_s: figures.window_s,
        healthy: !findings.iter().any(|f| f.severity >= Severity::Warning),
        findings,
    }
}

/// Says so when an injected fault explains a finding: an experiment, not
/// an incident.
fn name_faults(finding: &mut Finding, faults: &[(String, String)]) {
    let explaining: Vec<&(String, String)> = faults
        .iter()
        .filter(|(kind, _)| finding.cause.fault_kinds().contains(&kind.as_str()))
        .collect();
    if explaining.is_empty() {
        return;
    }
    let names = explaining
        .iter()
        .map(|(kind, params)| format!("{kind} {params}"))
        .collect::<Vec<_>>()
        .join(", ");
    finding.summary = format!(
        "{} Fault injection is active ({names}): this is an experiment, not an incident.",
        finding.summary
    );
    for (kind, _) in explaining {
        finding.evidence.push(Evidence {
            metric: format!("fault_injection_active{{kind=\"{kind}\"}}"),
            value: 1.0,
            expected: "0 outside experiments".into(),
        });
    }
}

impl Diagnosis {
    /// As the doctor's common result: a table for people, the diagnosis
    /// itself for `--json`; failed when any finding is a warning or worse.
    pub fn findings(&self) -> Findings {
        let mut rows: Vec<Vec<String>> = self
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.severity_word().to_owned(),
                    format!("{}\n@ {}", f.cause.as_str(), f.hop.as_str()),
                    format!("{}\n→ {}\n({})", f.summary, f.action, f.runbook),
                    f.evidence
                        .iter()
                        .map(|e| format!("{} = {} (expected {})", e.metric, e.value, e.expected))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ]
            })
            .collect();
        if self.findings.is_empty() {
            rows.push(vec![
                "ok".into(),
                "-".into(),
                format!("Nothing wrong found in {:.0} s.", self.window_s),
                String::new(),
            ]);
        }
        Findings {
            columns: [
                "severity",
                "cause @ hop",
                "what, and what to do",
                "evidence",
            ]
            .map(String::from)
            .to_vec(),
            rows,
            status: if self.healthy {
                Status::Ok
            } else {
                Status::Fail
            },
            detail: serde_json::to_value(self).unwrap_or_default(),
        }
    }
}

impl Finding {
    fn severity_word(&self) -> &'static str {
        match self.severity {
            Severity::Info => "info",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::figures::{Figures, Orchestrator};
    use super::*;

    fn with(o: Orchestrator) -> Figures {
        Figures {
            window_s: 10.0,
            orchestrator: Some(o),
            ..Figures::default()
        }
    }

    #[test]
    fn the_json_has_exactly_the_documented_shape() {
        let f = with(Orchestrator {
            rate_limited: 3.0,
            link_bad: vec![("checksum_mismatch", 1.0)],
            ..Orchestrator::default()
        });
        let d = diagnose(&f);
        let v = serde_json::to_value(&d).expect("json");
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["findings", "healthy", "window_s"]);
        assert_eq!(v["window_s"], 10.0);
        assert_eq!(v["healthy"], false);
        let first = &v["findings"][0];
        assert_eq!(
            keys(first),
            [
                "action", "cause", "evidence", "hop", "runbook", "severity", "summary"
            ]
        );
        assert_eq!(keys(&first["evidence"][0]), ["expected", "metric", "value"]);
        // Most severe first: the corruption (critical) before the limits.
        assert_eq!(first["cause"], "frame_corruption");
        assert_eq!(first["hop"], "worker-link");
        assert_eq!(first["severity"], "critical");
        assert_eq!(first["runbook"], "docs/runbook.md#frame_corruption");
        assert_eq!(v["findings"][1]["cause"], "admission_refusing");
        assert_eq!(d.findings().exit_code(69), 69);
    }

    #[test]
    fn healthy_is_exit_0_and_info_alone_stays_healthy() {
        let d = diagnose(&with(Orchestrator::default()));
        assert!(d.healthy && d.findings.is_empty());
        assert_eq!(d.findings().exit_code(69), 0);
        let info = diagnose(&with(Orchestrator {
            backpressure: crate::doctor::prom::Histogram {
                buckets: vec![(f64::INFINITY, 1.0)],
                sum: 9.0,
                count: 1.0,
            },
            ..Orchestrator::default()
        }));
        assert_eq!(info.findings.len(), 1);
        assert!(info.healthy, "an info finding does not fail");
    }

    #[test]
    fn an_injected_fault_is_named_on_the_finding_it_explains() {
        let mut f = with(Orchestrator {
            link_bad: vec![("checksum_mismatch", 4.0)],
            ..Orchestrator::default()
        });
        f.faults = vec![
            ("corrupt_frames".into(), "{\"every\":25}".into()),
            ("stall".into(), "{}".into()),
        ];
        let d = diagnose(&f);
        let finding = &d.findings[0];
        assert!(
            finding.summary.contains("corrupt_frames"),
            "{}",
            finding.summary
        );
        assert!(
            finding.summary.contains("experiment"),
            "{}",
            finding.summary
        );
        assert!(
            !finding.summary.contains("stall"),
            "only the fault that explains it"
        );
        assert!(
            finding
                .evidence
                .iter()
                .any(|e| e.metric.contains("corrupt_frames"))
        );
    }
}
