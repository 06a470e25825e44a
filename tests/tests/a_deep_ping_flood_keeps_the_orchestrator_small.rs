//! A client that sends deep pings as fast as it can and never reads cannot
//! grow the orchestrator: one deep ping runs at a time per connection, the
//! rest are answered (`rate_limited`) through a bounded queue, and a client
//! that reads nothing is held back by TCP. Others keep being served.

use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tts_client::Client;
use tts_tests::{ServiceProcess, eventually, metric, raw_ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_ping_flood_keeps_the_orchestrator_small() {
    let worker = ServiceProcess::worker(&["--engine", "espeak"]).await;
    let orchestrator = ServiceProcess::orchestrator(&format!("http://{}", worker.addr), &[]).await;
    let url = format!("ws://{}/ws", orchestrator.addr);
    let before = orchestrator.rss_bytes();

    let mut flood = raw_ws(&url, Some(4096), &[]).await.expect("connect");
    let ping = Message::text(r#"{"type":"ping","id":1,"deep":true}"#);
    let (started, mut sent, mut peak) = (Instant::now(), 0u64, before);
    while started.elapsed() < Duration::from_secs(5) {
        // A send that cannot complete means TCP is holding the client back.
        match tokio::time::timeout(Duration::from_millis(100), flood.send(ping.clone())).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("the flood's connection failed: {e}"),
            Err(_) => {}
        }
        if sent % 1000 == 0 {
            peak = peak.max(orchestrator.rss_bytes());
        }
    }
    peak = peak.max(orchestrator.rss_bytes());
    // Meanwhile another client is answered.
    let mut other = Client::connect(&url).await.expect("connect");
    other.ping(7).await.expect("pong");
    drop((flood, other));
    // Measured once the orchestrator has let both connections go.
    let admin = orchestrator.admin;
    let closed = eventually(Duration::from_secs(10), || async move {
        metric(admin, "tts_orchestrator_websocket_connections").await == 0.0
    })
    .await;
    assert!(closed, "the connections were not released");
    let after = orchestrator.rss_bytes();
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "{sent} deep pings sent; RSS {:.1} MiB before, {:.1} peak, {:.1} after",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(sent > 10, "the flood never got going");
    assert!(
        peak < before + 64 * (1 << 20),
        "the orchestrator grew from {:.1} to {:.1} MiB",
        mib(before),
        mib(peak)
    );
}
