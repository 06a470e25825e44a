//! Every Piper voice in the voice directory (an `.onnx` with its
//! `.onnx.json`) is loaded and offered by name, with its own language; a
//! voice that fails to load is left out, counted and logged, and the
//! others serve; a model without its configuration is not a voice.

use tts_client::{Client, SynthesizeOptions};
use tts_proto::v1::ListVoicesRequest;
use tts_proto::v1::tts_client::TtsClient;
use tts_tests::{
    ServiceProcess, assert_speech_like, http_get, repo_root, sample, spawn_orchestrator,
};

/// A directory removed when the test ends, however it ends.
struct Dir(std::path::PathBuf);

impl Dir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_voice_in_the_voice_directory_is_offered() {
    let dir = Dir(std::env::temp_dir().join(format!("tts-voices-{}", std::process::id())));
    std::fs::create_dir_all(dir.path()).expect("temp dir");
    let voices = repo_root().join(".cache/voices");
    let model = voices.join("en_US-joe-medium.onnx");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(voices.join("en_US-joe-medium.onnx.json")).expect("voice config"),
    )
    .expect("JSON");
    // The default voice, and the same model again as a British voice.
    let mut british = config.clone();
    british["language"]["code"] = "en_GB".into();
    for (name, config) in [
        ("en_US-joe-medium", &config),
        ("en_GB-second-medium", &british),
    ] {
        std::os::unix::fs::symlink(&model, dir.path().join(format!("{name}.onnx"))).expect("link");
        std::fs::write(
            dir.path().join(format!("{name}.onnx.json")),
            serde_json::to_vec(config).expect("JSON"),
        )
        .expect("write config");
    }
    // A broken model with a configuration, and a model with none.
    std::fs::write(dir.path().join("broken.onnx"), b"not a model").expect("write");
    std::fs::write(
        dir.path().join("broken.onnx.json"),
        serde_json::to_vec(&config).expect("JSON"),
    )
    .expect("write");
    std::os::unix::fs::symlink(&model, dir.path().join("lonely.onnx")).expect("link");

    let voice_dir = dir.path().to_str().expect("utf-8 path");
    let worker = ServiceProcess::worker(&["--voice-dir", voice_dir, "--deterministic"]).await;
    let url = format!("http://{}", worker.addr);
    let listed = TtsClient::connect(url.clone())
        .await
        .expect("connect")
        .list_voices(ListVoicesRequest {})
        .await
        .expect("ListVoices")
        .into_inner();
    assert_eq!(listed.default_voice, "en_US-joe-medium");
    let piper: Vec<(&str, &str)> = listed
        .voices
        .iter()
        .filter(|v| v.engine == "piper")
        .map(|v| (v.name.as_str(), v.language.as_str()))
        .collect();
    assert_eq!(
        piper,
        [
            ("en_US-joe-medium", "en-US"),
            ("en_GB-second-medium", "en-GB")
        ]
    );
    assert!(listed.voices.iter().any(|v| v.name == "espeak-de"));
    let (_, metrics) = http_get(worker.admin, "/metrics").await;
    assert_eq!(sample(&metrics, "tts_worker_voices_not_loaded"), 1.0);

    // Both speak through the pipeline; the orchestrator lists both.
    let pipeline = spawn_orchestrator(url, tts_orchestrator::OrchestratorConfig::default()).await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    for voice in ["en_GB-second-medium", "en_US-joe-medium"] {
        let opts = SynthesizeOptions {
            voice: Some(voice.into()),
            ..SynthesizeOptions::default()
        };
        let u = client
            .synthesize("Every voice in the directory speaks.", &opts)
            .await
            .expect("spoken");
        assert_eq!(u.report.voice, voice);
        assert_eq!(u.report.integrity_failures(), 0);
        assert_speech_like(&u.samples, 6);
    }
    let (status, body) = http_get(pipeline.orchestrator.addr, "/v1/voices").await;
    assert_eq!(status, 200);
    for name in ["en_US-joe-medium", "en_GB-second-medium"] {
        assert!(body.contains(name), "{name} in {body}");
    }
    assert!(
        !body.contains("broken") && !body.contains("lonely"),
        "{body}"
    );

    pipeline.orchestrator.stop().await;
    drop(worker);
}
