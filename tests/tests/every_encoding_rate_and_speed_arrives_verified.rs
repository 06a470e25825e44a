//! Per-request options over the WebSocket: every encoding and rate arrives
//! as one verified frame per 20 ms (sizes by format, CRC-32C over the
//! encoded payload), decodes back to speech, `speed` changes the length,
//! bad combinations get `bad_request` naming the field, and `voices` lists
//! the worker's voices.

use tts_client::{Client, Encoding, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_tests::spawn_pipeline;

const TEXT: &str = "Every format carries the same sentence.";

fn level(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64)
        .sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_rate_and_speed_arrives_verified() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");

    let reference = client
        .synthesize(TEXT, &SynthesizeOptions::default())
        .await
        .expect("pcm 48 kHz");
    let seconds = reference.samples.len() as f64 / 48_000.0;
    for (encoding, rate) in [
        (Encoding::PcmS16le, 8_000),
        (Encoding::PcmS16le, 16_000),
        (Encoding::PcmS16le, 24_000),
        (Encoding::Mulaw, 8_000),
        (Encoding::Opus, 48_000),
    ] {
        let opts = SynthesizeOptions {
            encoding: Some(encoding),
            sample_rate: Some(rate),
            ..SynthesizeOptions::default()
        };
        let u = client.synthesize(TEXT, &opts).await.expect("synthesized");
        let r = &u.report;
        let what = format!("{} at {rate} Hz", encoding.as_str());
        assert_eq!(r.integrity_failures(), 0, "{what}: {r:?}");
        assert_eq!(r.frames, r.end_frames, "{what}");
        assert_eq!(u.sample_rate, rate, "{what}");
        let got = u.samples.len() as f64 / f64::from(rate);
        // The same sentence, a different sampling of it (Piper's noise
        // makes each rendition a little different in length).
        assert!(
            (got / seconds - 1.0).abs() < 0.25,
            "{what}: {got:.2} s vs {seconds:.2} s"
        );
        let l = level(&u.samples);
        assert!(l > 500.0, "{what}: decoded level {l:.0} is not speech");
    }

    let fast = SynthesizeOptions {
        speed: Some(2.0),
        ..SynthesizeOptions::default()
    };
    let quick = client.synthesize(TEXT, &fast).await.expect("speed 2");
    let ratio = quick.samples.len() as f64 / reference.samples.len() as f64;
    assert!(
        (0.35..0.7).contains(&ratio),
        "speed 2 gave {ratio:.2} of the length"
    );

    for (message, field) in [
        (
            r#"{"type":"synthesize","text":"Hi","encoding":"opus","sample_rate":8000}"#,
            "opus",
        ),
        (
            r#"{"type":"synthesize","text":"Hi","encoding":"mulaw","sample_rate":48000}"#,
            "mulaw",
        ),
        (
            r#"{"type":"synthesize","text":"Hi","sample_rate":22050}"#,
            "sample_rate",
        ),
        (r#"{"type":"synthesize","text":"Hi","speed":0}"#, "speed"),
        (
            r#"{"type":"synthesize","text":"Hi","noise_w":3}"#,
            "noise_w",
        ),
        (
            r#"{"type":"synthesize","text":"Hi","encoding":"flac"}"#,
            "encoding",
        ),
    ] {
        let value: serde_json::Value = serde_json::from_str(message).expect("json");
        client.send_json(&value).await.expect("send");
        match client.next_event().await.expect("answer") {
            Event::Message(ServerMessage::Error { code, message, .. }) => {
                assert_eq!(code.as_str(), "bad_request");
                assert!(message.contains(field), "{message:?} should name {field}");
            }
            other => panic!("expected an error for {message}, got {other:?}"),
        }
    }

    client
        .send_json(&serde_json::json!({"type": "voices"}))
        .await
        .expect("send");
    match client.next_event().await.expect("voices") {
        Event::Message(ServerMessage::Voices {
            default_voice,
            voices,
        }) => {
            assert_eq!(default_voice, "en_US-joe-medium");
            let joe = voices
                .iter()
                .find(|v| v.name == default_voice)
                .expect("the default voice is listed");
            assert_eq!(
                (joe.engine.as_str(), joe.native_sample_rate),
                ("piper", 22_050)
            );
            // Every espeak-ng language is a voice of its own.
            for name in ["espeak-en-us", "espeak-de", "espeak-fr-fr", "espeak-ja"] {
                assert!(voices.iter().any(|v| v.name == name), "{name} missing");
            }
            assert!(voices.len() > 50, "{} voices", voices.len());
        }
        other => panic!("expected voices, got {other:?}"),
    }
    let german = SynthesizeOptions {
        voice: Some("espeak-de".into()),
        ..SynthesizeOptions::default()
    };
    let u = client
        .synthesize("Guten Tag, wie geht es Ihnen heute?", &german)
        .await
        .expect("German");
    assert_eq!(u.report.voice, "espeak-de");
    assert_eq!(u.report.integrity_failures(), 0);
    assert!(level(&u.samples) > 500.0, "German is spoken");
    let unknown = SynthesizeOptions {
        voice: Some("espeak-klingon".into()),
        ..SynthesizeOptions::default()
    };
    match client.synthesize("Hello.", &unknown).await {
        Err(tts_client::ClientError::Server { code, .. }) => {
            assert_eq!(code, ErrorCode::UnknownVoice)
        }
        other => panic!("expected unknown_voice, got {other:?}"),
    }
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
