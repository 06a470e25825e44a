//! `/ready` turns 503 within seconds of the worker stopping, naming the
//! failed check, while WebSocket requests get `worker_unavailable`; when the
//! worker comes back on the same address everything recovers without a
//! restart.

use std::time::Duration;

use tokio::net::TcpListener;
use tts_client::{Client, ClientError, ErrorCode, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{eventually, http_get, spawn_orchestrator, spawn_worker_on, worker_config};
use tts_worker::Worker;

async fn load_worker() -> Worker {
    tokio::task::spawn_blocking(|| Worker::load(&worker_config()))
        .await
        .expect("join")
        .expect("worker loads")
}

async fn ready(admin: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_get(admin, "/ready").await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let worker = spawn_worker_on(load_worker().await, listener);
    let pipeline =
        spawn_orchestrator(format!("http://{addr}"), OrchestratorConfig::default()).await;
    let admin = pipeline.admin;

    let (status, body) = ready(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    for check in ["worker", "disk", "memory"] {
        assert_eq!(body["checks"][check]["status"], "ok", "{body}");
        assert!(body["checks"][check]["latency_ms"].is_number());
    }
    let (status, deep) = http_get(admin, "/ready?deep=1").await;
    assert_eq!(status, 200, "{deep}");
    let deep: serde_json::Value = serde_json::from_str(&deep).expect("JSON");
    assert_eq!(deep["checks"]["canary"]["status"], "ok", "{deep}");

    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    worker.stop().await;
    let down = eventually(Duration::from_secs(10), || async {
        ready(admin).await.0 == 503
    })
    .await;
    assert!(down, "/ready did not turn 503");
    let (_, body) = ready(admin).await;
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["worker"]["status"], "fail", "{body}");
    match client
        .synthesize("Anyone home?", &SynthesizeOptions::default())
        .await
    {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::WorkerUnavailable),
        other => panic!("expected worker_unavailable, got {other:?}"),
    }
    let (status, _) = http_get(admin, "/health").await;
    assert_eq!(status, 200, "liveness does not depend on the worker");

    // The worker returns on the same address.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let worker = spawn_worker_on(load_worker().await, listener);
    let up = eventually(Duration::from_secs(15), || async {
        ready(admin).await.0 == 200
    })
    .await;
    assert!(up, "/ready did not recover");
    let u = client
        .synthesize("Back again.", &SynthesizeOptions::default())
        .await
        .expect("the same connection works again");
    assert!(u.report.frames > 0 && u.report.integrity_failures() == 0);

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
