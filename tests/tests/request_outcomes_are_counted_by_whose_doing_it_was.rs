//! Every request is counted once, under the outcome that says whose doing
//! its end was: completed, cancelled, disconnected, client_error (the
//! client's mistakes), refused (the worker protecting its streams) and
//! failed (the server's own failures, the only ones an error-rate alert
//! counts); the counts add up to the requests sent, on both processes.

use std::time::Duration;

use tts_client::{Client, ClientError, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    LONG_TEXT, eventually, sample, spawn_orchestrator_metered, spawn_worker, worker_config,
};

/// Starts a long request and waits for its first frame.
async fn playing(client: &mut Client) -> String {
    let id = client
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    loop {
        match client.next_event().await.expect("event") {
            Event::Frame(..) => return id,
            Event::Message(m @ ServerMessage::Error { .. }) => panic!("not playing: {m:?}"),
            _ => {}
        }
    }
}

async fn error_code(client: &mut Client, text: &str, opts: &SynthesizeOptions) -> ErrorCode {
    match client.synthesize(text, opts).await {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!(
            "expected an error, got {:?}",
            other.map(|u| u.report.frames)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_outcomes_are_counted_by_whose_doing_it_was() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    // One request at a time: a second is refused.
    let worker = spawn_worker(tts_worker::WorkerConfig {
        max_requests: 1,
        ..worker_config()
    })
    .await;
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        Some(metrics.clone()),
    )
    .await;
    let count = |series: &str| sample(&metrics.render(), series);
    let settled = |series: &'static str, value: f64| {
        let metrics = metrics.clone();
        async move {
            eventually(Duration::from_secs(10), || {
                let text = metrics.render();
                async move { sample(&text, series) == value }
            })
            .await
        }
    };

    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    client
        .synthesize("Counted once.", &SynthesizeOptions::default())
        .await
        .expect("completed");
    // Cancelled by the client.
    let id = playing(&mut client).await;
    client
        .send_json(&serde_json::json!({"type": "cancel", "request_id": id}))
        .await
        .expect("cancel");
    loop {
        if let Event::Message(ServerMessage::End { cancelled, .. }) =
            client.next_event().await.expect("event")
        {
            assert!(cancelled);
            break;
        }
    }
    // The client's own mistakes.
    let voice = SynthesizeOptions {
        voice: Some("no-such-voice".into()),
        ..SynthesizeOptions::default()
    };
    assert_eq!(
        error_code(&mut client, "Hello.", &voice).await,
        ErrorCode::UnknownVoice
    );
    assert_eq!(
        error_code(&mut client, "   ", &SynthesizeOptions::default()).await,
        ErrorCode::EmptyText
    );
    // The worker's one slot is free once the cancelled request has left
    // it (the client hears `end` before the worker sees the cancel), then
    // taken: a second request is refused.
    assert!(settled("tts_worker_inflight_requests", 0.0).await);
    let mut other = Client::connect(&pipeline.ws_url).await.expect("connect");
    playing(&mut other).await;
    assert_eq!(
        error_code(&mut client, "Me too.", &SynthesizeOptions::default()).await,
        ErrorCode::Overloaded
    );
    // A client that goes away mid-stream.
    drop(other);
    assert!(
        settled(
            r#"tts_orchestrator_requests_total{outcome="disconnected",code="none"}"#,
            1.0
        )
        .await
    );

    for (series, expected) in [
        (
            r#"tts_orchestrator_requests_total{outcome="completed",code="none"}"#,
            1.0,
        ),
        (
            r#"tts_orchestrator_requests_total{outcome="cancelled",code="none"}"#,
            1.0,
        ),
        (
            r#"tts_orchestrator_requests_total{outcome="client_error",code="unknown_voice"}"#,
            1.0,
        ),
        (
            r#"tts_orchestrator_requests_total{outcome="client_error",code="empty_text"}"#,
            1.0,
        ),
        (
            r#"tts_orchestrator_requests_total{outcome="refused",code="overloaded"}"#,
            1.0,
        ),
    ] {
        assert_eq!(count(series), expected, "{series}");
    }
    let text = metrics.render();
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("tts_orchestrator_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 6.0, "every request counted exactly once");
    let failed: f64 = text
        .lines()
        .filter(|l| l.starts_with(r#"tts_orchestrator_requests_total{outcome="failed""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 0.0, "nothing here is the server failing");

    // The worker saw four or five of them: empty text never left the
    // orchestrator, and the unknown voice did not either once the
    // orchestrator had listed the worker's voices (its first load poll).
    assert!(settled(r#"tts_worker_requests_total{outcome="cancelled"}"#, 2.0).await);
    for (series, expected) in [
        (r#"tts_worker_requests_total{outcome="completed"}"#, 1.0),
        (r#"tts_worker_requests_total{outcome="refused"}"#, 1.0),
        (r#"tts_worker_requests_total{outcome="failed"}"#, 0.0),
    ] {
        assert_eq!(count(series), expected, "{series}");
    }
    let unknown_at_worker = count(r#"tts_worker_requests_total{outcome="client_error"}"#);
    assert!(
        unknown_at_worker <= 1.0,
        "at most the unknown voice: {unknown_at_worker}"
    );
    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
