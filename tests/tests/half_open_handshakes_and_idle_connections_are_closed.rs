//! Connections cannot be held for free: handshakes that never finish are
//! closed after the handshake timeout and count against the connection
//! caps meanwhile, one address cannot hold more than its share, idle
//! WebSockets are closed with code 1000, and the admin listener keeps
//! answering throughout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    free_port, http_get, next_text_or_close, raw_ws, sample, spawn_orchestrator_metered,
};

/// Whether the server closes `tcp` within `limit` (reads EOF or a reset).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_and_idle_connections_are_closed() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let config = OrchestratorConfig {
        handshake_timeout_secs: 1.0,
        max_connections_per_address: 20,
        idle_timeout_secs: 1.0,
        ..OrchestratorConfig::default()
    };
    // No worker is needed to hold connections open.
    let worker_url = format!("http://127.0.0.1:{}", free_port());
    let pipeline = spawn_orchestrator_metered(worker_url, config, Some(metrics.clone())).await;
    let addr = pipeline.orchestrator.addr;

    // 30 connections that send half a request line and then nothing.
    let mut half_open = Vec::new();
    for _ in 0..30 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        half_open.push(tcp);
    }
    // The admin listener answers while they are held.
    let (status, _) = http_get(pipeline.admin, "/health").await;
    assert_eq!(status, 200);
    // Ten were over the address's share and are closed at once; the rest
    // when their handshake time runs out.
    let mut closed = 0;
    for tcp in &mut half_open {
        if closed_within(tcp, Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 30, "half-open connections left open");
    let scrape = metrics.render();
    let refused = |reason: &str| {
        sample(
            &scrape,
            &format!("tts_orchestrator_connections_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("per_address"), 10.0);
    assert_eq!(refused("handshake_timeout"), 20.0);

    // Their tickets are back: a real client connects, then idles out.
    let mut ws = raw_ws(&pipeline.ws_url, None, &[]).await.expect("connect");
    let ready = next_text_or_close(&mut ws).await;
    assert!(
        matches!(ready, Some(Ok(ref v)) if v["type"] == "ready"),
        "{ready:?}"
    );
    let close = tokio::time::timeout(Duration::from_secs(10), next_text_or_close(&mut ws))
        .await
        .expect("closed when idle");
    assert_eq!(close, Some(Err(1000)));
    pipeline.orchestrator.stop().await;
}
