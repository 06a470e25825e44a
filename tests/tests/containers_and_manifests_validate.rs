//! The container and cluster artefacts are checked as far as this machine
//! allows (there is no container engine or cluster here):
//! - `compose.yaml` by docker-compose's own parser (`config -q`);
//! - `deploy/k8s/*.yaml` against Kubernetes' schemas
//!   (`kubernetes-validate --strict`) and by yamllint;
//! - compose's Prometheus configuration by promtool, with the rules it
//!   mounts beside it.
//!
//! Each validator is first shown a broken copy, to prove it would catch
//! one.

use std::path::Path;
use std::process::Command;

use tts_tests::repo_root;

fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/setup.sh --test installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pyenv(tool: &str) -> String {
    repo_root()
        .join(".cache/pyenv/bin")
        .join(tool)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn containers_and_manifests_validate() {
    let root = repo_root();
    let scratch = tempfile_dir();

    // compose.yaml, and a copy with a dependency condition that does not
    // exist.
    let (ok, out) = run(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        &root,
    );
    assert!(ok, "compose.yaml: {out}");
    let compose = std::fs::read_to_string(root.join("compose.yaml")).expect("compose.yaml");
    assert!(compose.contains("condition: service_healthy"));
    let broken = compose.replacen("condition: service_healthy", "condition: service_happy", 1);
    std::fs::write(scratch.join("compose.yaml"), broken).expect("write");
    let (ok, out) = run(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        &scratch,
    );
    assert!(!ok, "a broken compose file must fail: {out}");

    // The manifests, every one, and a copy with a misspelt field.
    let manifests: Vec<String> = std::fs::read_dir(root.join("deploy/k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| Some(e.ok()?.path().to_string_lossy().into_owned()))
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let mut args = vec!["--strict"];
    args.extend(manifests.iter().map(String::as_str));
    let (ok, out) = run(&pyenv("kubernetes-validate"), &args, &root);
    assert!(ok, "deploy/k8s: {out}");
    for kind in ["Deployment", "PodDisruptionBudget", "Service"] {
        assert!(out.contains(&kind.to_lowercase()), "{kind} checked: {out}");
    }
    let worker = std::fs::read_to_string(root.join("deploy/k8s/worker.yaml")).expect("worker");
    assert!(worker.contains("preStop") && worker.contains("readinessProbe"));
    let typo = scratch.join("worker.yaml");
    std::fs::write(&typo, worker.replacen("readinessProbe", "readinesProbe", 1)).expect("write");
    let (ok, out) = run(
        &pyenv("kubernetes-validate"),
        &["--strict", &typo.to_string_lossy()],
        &root,
    );
    assert!(!ok, "a misspelt field must fail: {out}");
    let mut lint = vec![
        "-d",
        "{extends: relaxed, rules: {line-length: {max: 120}}}",
        "compose.yaml",
    ];
    lint.extend([
        "deploy/k8s",
        "deploy/compose",
        "deploy/grafana/provisioning",
    ]);
    let (ok, out) = run(&pyenv("yamllint"), &lint, &root);
    assert!(ok, "yamllint: {out}");

    // compose's Prometheus configuration, with the rules mounted beside it.
    std::fs::copy(
        root.join("deploy/compose/prometheus.yml"),
        scratch.join("prometheus.yml"),
    )
    .expect("copy");
    std::fs::copy(
        root.join("deploy/prometheus/rules.yml"),
        scratch.join("rules.yml"),
    )
    .expect("copy");
    let (ok, out) = run("promtool", &["check", "config", "prometheus.yml"], &scratch);
    assert!(ok, "deploy/compose/prometheus.yml: {out}");
}

/// A fresh directory under the target directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = repo_root()
        .join("target/test-artifacts")
        .join(format!("deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
