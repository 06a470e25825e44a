//! With `--allow-profiling` and the admin token, `tts-client doctor profile
//! --target all` takes a flamegraph of the orchestrator and of the worker
//! it finds through the orchestrator's `/info`, both at once, while traffic
//! flows, and saves each as an SVG named after the process and its
//! listener. Without the token a profile is refused with 401; a process
//! started without `--allow-profiling` refuses with 404 and names the flag,
//! and the client turns that into a failed row and exit code 69.

use std::path::PathBuf;
use std::process::{Command, Output};

use tts_tests::{ADMIN_TOKEN, ServiceProcess, binary, http_get, serve_traffic};

const PROFILING: [&str; 3] = ["--allow-profiling", "--admin-token", ADMIN_TOKEN];

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tts-client doctor profile ARGS --json`, run in `dir`.
async fn doctor_profile(dir: PathBuf, args: Vec<String>) -> (Output, serde_json::Value) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary("tts-client"))
            .args(["doctor", "profile", "--json"])
            .args(args)
            .current_dir(dir)
            .env_remove("TTS_ADMIN_TOKEN")
            .env_remove("TTS_ORCHESTRATOR_ADMIN")
            .output()
            .expect("tts-client runs")
    })
    .await
    .expect("join");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_taken_on_demand_and_only_when_allowed() {
    let (worker, plain) = tokio::join!(
        ServiceProcess::worker(&[
            "--engine",
            "espeak",
            PROFILING[0],
            PROFILING[1],
            PROFILING[2]
        ]),
        ServiceProcess::worker(&["--engine", "espeak"]),
    );
    let orchestrator =
        ServiceProcess::orchestrator(&format!("http://{}", worker.addr), &PROFILING).await;

    // Allowed, but not without the token.
    for admin in [orchestrator.admin, worker.admin] {
        let (status, body) = http_get(admin, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(status, 401, "{admin}: {body}");
    }

    let dir = Dir(std::env::temp_dir().join(format!("tts-profile-e2e-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("scratch directory");
    let ws_url = format!("ws://{}/ws", orchestrator.addr);
    let traffic = tokio::spawn(async move { serve_traffic(&ws_url).await });
    let args = [
        "--seconds",
        "2",
        "--target",
        "all",
        "--orchestrator",
        &format!("http://{}", orchestrator.admin),
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let (out, report) = doctor_profile(dir.0.clone(), args.map(String::from).to_vec()).await;
    assert!(traffic.await.expect("traffic") > 0);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let profiles = report["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 2, "{report}");
    for (process, listener) in [
        ("orchestrator", orchestrator.admin),
        ("worker", worker.admin),
    ] {
        let name = format!(
            "profile-{process}-{}_{}.svg",
            listener.ip(),
            listener.port()
        );
        let row = profiles
            .iter()
            .find(|p| p["process"] == process)
            .unwrap_or_else(|| panic!("no {process} row: {report}"));
        assert_eq!(row["status"], "ok", "{report}");
        assert_eq!(row["file"], name.as_str(), "{report}");
        let svg = std::fs::read_to_string(dir.0.join(&name)).expect("the SVG was written");
        assert_eq!(row["bytes"], svg.len(), "{report}");
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}: {svg}"
        );
    }

    // Not allowed: 404 and the flag to start it with.
    let (status, body) = http_get(plain.admin, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(status, 404, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(
        error["error"],
        "profiling is off: start the process with --allow-profiling"
    );
    // The client says so too (`--target orchestrator` profiles exactly the
    // listener it is given, here the plain worker's).
    let args = [
        "--seconds".to_owned(),
        "1".to_owned(),
        "--target".to_owned(),
        "orchestrator".to_owned(),
        "--orchestrator".to_owned(),
        format!("http://{}", plain.admin),
        "--admin-token".to_owned(),
        ADMIN_TOKEN.to_owned(),
    ];
    let (out, report) = doctor_profile(dir.0.clone(), args.to_vec()).await;
    assert_eq!(out.status.code(), Some(69), "{report}");
    let detail = report["profiles"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("404") && detail.contains("--allow-profiling"),
        "{report}"
    );
}
