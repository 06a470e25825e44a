//! The operator artefacts hold together: the Prometheus config and rules
//! pass promtool (including the rule unit tests), every metric the code
//! defines is documented, the dashboard only uses documented metrics, and
//! every alert's runbook link lands on a runbook section.

use std::collections::BTreeSet;
use std::process::Command;

use tts_tests::repo_root;

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("promtool (run scripts/setup.sh --test)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `tts_…` metric name in `text`, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tts_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        let name = &text[start..end];
        if boundary
            && name.len() > "tts_".len()
            // A prefix (`starts_with("tts_worker_")`) names no metric.
            && !name.ends_with('_')
            && (name.starts_with("tts_worker_") || name.starts_with("tts_orchestrator_"))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn deploy_artefacts_pass_promtool() {
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", "deploy/prometheus/rules.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/rules_test.yml"]);

    let documented = metric_names(&read("docs/metrics.md"));
    let defined: BTreeSet<String> = metric_names(&read("orchestrator/src/metrics.rs"))
        .union(&metric_names(&read("worker/src/metrics.rs")))
        .cloned()
        .chain(metric_names(&read("telemetry/src/faults/kinds.rs")))
        .collect();
    assert!(defined.len() >= 25, "{defined:?}");
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/tts-pipeline.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let used = metric_names(&exprs);
    let unknown: Vec<_> = used.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses unknown metrics: {unknown:?}"
    );
    let rules = read("deploy/prometheus/rules.yml");
    for recorded in [
        "tts:time_to_first_audio_seconds:p95",
        "tts:frame_gap_seconds:p99",
    ] {
        assert!(
            exprs.contains(recorded) || rules.contains(recorded),
            "{recorded}"
        );
    }
    let unknown: Vec<_> = metric_names(&rules).difference(&defined).cloned().collect();
    assert!(unknown.is_empty(), "rules use unknown metrics: {unknown:?}");

    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.to_lowercase().replace(' ', "-"))
        .collect();
    for link in rules.split("docs/runbook.md#").skip(1) {
        let anchor: String = link.chars().take_while(|c| *c != '"').collect();
        assert!(
            anchors.contains(&anchor),
            "runbook has no section #{anchor}: {anchors:?}"
        );
    }
}
