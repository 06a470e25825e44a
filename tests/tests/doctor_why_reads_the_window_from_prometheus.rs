//! `doctor why --prometheus URL` takes its window from a real Prometheus
//! server scraping the pipeline (no waiting, no scrapes of its own) and
//! names the same cause and hop as from its own scrapes: corrupted frames
//! on the worker link, here, injected while traffic flows.

use std::time::Duration;

use tts_client::doctor::why;
use tts_tests::chaos::Traffic;
use tts_tests::{ADMIN_TOKEN, ServiceProcess, eventually, free_port, http_post};

const TEXT: &str = "Prometheus keeps what the pipeline says, second by second.";

/// A Prometheus server scraping `targets` every second, stopped on drop.
struct Prometheus {
    url: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    async fn start(targets: &[std::net::SocketAddr]) -> Self {
        let dir = std::env::temp_dir().join(format!("tts-prometheus-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("dir");
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tts\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (run scripts/setup.sh --test)");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("127.0.0.1:{port}").parse().expect("addr");
        let up = eventually(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(ready).await.is_ok()
                && tts_tests::http_get(ready, "/-/ready").await.0 == 200
        })
        .await;
        assert!(up, "prometheus did not start");
        Self { url, child, dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Now, seconds since the Unix epoch (Prometheus's clock).
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When Prometheus last scraped the orchestrator's checksum failures,
/// Unix seconds (0 before the first scrape).
async fn latest_checksum_scrape(prometheus: &str) -> f64 {
    let addr = prometheus
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    // max(timestamp(tts_orchestrator_frames_total{result="checksum_mismatch"}))
    let query =
        "max(timestamp(tts_orchestrator_frames_total%7Bresult%3D%22checksum_mismatch%22%7D))";
    let (_, body) = tts_tests::http_get(addr, &format!("/api/v1/query?query={query}")).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_why_reads_the_window_from_prometheus() {
    let faults = ["--allow-fault-injection", "--admin-token", ADMIN_TOKEN];
    let worker = ServiceProcess::worker(&faults).await;
    let orchestrator = ServiceProcess::orchestrator(&format!("http://{}", worker.addr), &[]).await;
    let prometheus = Prometheus::start(&[orchestrator.admin, worker.admin]).await;

    // Both targets scraped at least once before the window opens.
    let query = prometheus.url.clone();
    let scraped = eventually(Duration::from_secs(20), || {
        let query = query.clone();
        async move {
            let addr = query.trim_start_matches("http://").parse().expect("addr");
            let (_, body) = tts_tests::http_get(addr, "/api/v1/query?query=up").await;
            body.matches("\"1\"]").count() >= 2
        }
    })
    .await;
    assert!(scraped, "Prometheus scrapes both services");

    let traffic = Traffic::start(&format!("ws://{}/ws", orchestrator.addr), 2, TEXT);
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let fault_start = unix_seconds();
    let started = http_post(
        worker.admin,
        "/faults",
        r#"{"kind":"corrupt_frames","every":30,"duration_s":30}"#,
        &[&auth],
    )
    .await;
    assert_eq!(started.status, 201);
    // Six seconds of corrupted traffic in Prometheus's store: a scrape of
    // the checksum failures taken that long after the fault began.
    let stored = eventually(Duration::from_secs(20), || {
        let url = prometheus.url.clone();
        async move { latest_checksum_scrape(&url).await >= fault_start + 6.0 }
    })
    .await;
    traffic.stop().await;
    assert!(
        stored,
        "Prometheus holds no scrape six seconds into the fault"
    );

    let opts = why::Options {
        orchestrator: format!("http://{}", orchestrator.admin),
        window: Duration::from_secs(6),
        prometheus: Some(prometheus.url.clone()),
        ws_url: None,
        redis: None,
        worker_token: None,
    };
    let asked = std::time::Instant::now();
    let d = why::run(&opts).await.expect("doctor why");
    let took = asked.elapsed();
    let top = d.findings.first().expect("a finding");
    assert_eq!(top.cause.as_str(), "frame_corruption", "{:?}", d.findings);
    assert_eq!(
        serde_json::to_value(top.hop).expect("hop"),
        "worker-link",
        "{:?}",
        d.findings
    );
    assert!(!d.healthy);
    // The window was not waited out: it came from Prometheus's store.
    assert!(took < opts.window, "{took:?}");

    // Pointed at nothing, it says where it looked.
    let nowhere = why::Options {
        prometheus: Some(format!("http://127.0.0.1:{}", free_port())),
        ..opts
    };
    let err = why::run(&nowhere).await.expect_err("no Prometheus there");
    assert!(err.to_string().contains("Prometheus at"), "{err}");
}
