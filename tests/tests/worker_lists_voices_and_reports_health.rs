//! The worker's gRPC surface: ListVoices names both engines' voices, the
//! standard health service says SERVING, a message over the text limit is
//! refused unread, the light espeak-ng voice speaks
//! through the pipeline, and the orchestrator's `/health` reports the worker.

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tts_client::{Client, SynthesizeOptions};
use tts_proto::v1::ListVoicesRequest;
use tts_proto::v1::tts_client::TtsClient;
use tts_tests::{assert_speech_like, http_get, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_lists_voices_and_reports_health() {
    let (worker, pipeline) = spawn_pipeline().await;
    let channel = Channel::from_shared(format!("http://{}", worker.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let voices = TtsClient::new(channel.clone())
        .list_voices(ListVoicesRequest {})
        .await
        .expect("ListVoices")
        .into_inner();
    assert_eq!(voices.default_voice, "en_US-joe-medium");
    let piper = voices
        .voices
        .iter()
        .find(|v| v.name == "en_US-joe-medium")
        .expect("piper voice");
    assert_eq!(
        (piper.engine.as_str(), piper.native_sample_rate),
        ("piper", 22_050)
    );
    assert_eq!(piper.language, "en-US");
    let espeak = voices
        .voices
        .iter()
        .find(|v| v.name == "espeak-en-us")
        .expect("espeak voice");
    assert_eq!(espeak.engine, "espeak");

    // A request far over the text limit is refused before the worker
    // reads it into memory (tonic's default would take 4 MiB).
    let huge = tts_proto::v1::SynthesizeRequest {
        text: "a".repeat(tts_worker::max_request_bytes(5000) + 1),
        ..Default::default()
    };
    let refused = TtsClient::new(channel.clone())
        .synthesize(huge)
        .await
        .map(|_| ())
        .expect_err("an oversized request is refused");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");

    for service in ["", "tts.v1.Tts"] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING for {service:?}");
    }

    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let opts = SynthesizeOptions {
        voice: Some("espeak-en-us".into()),
        ..SynthesizeOptions::default()
    };
    let u = client
        .synthesize("Hello from the formant voice, quick and light.", &opts)
        .await
        .expect("espeak synthesis");
    assert_eq!(u.report.voice, "espeak-en-us");
    assert_eq!(u.report.integrity_failures(), 0);
    assert_speech_like(&u.samples, 8);

    let (status, body) = http_get(pipeline.admin, "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["worker"]["status"], "ok", "{health}");
    assert!(
        health["frames_sent"].as_u64().is_some_and(|n| n > 0),
        "{health}"
    );

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
