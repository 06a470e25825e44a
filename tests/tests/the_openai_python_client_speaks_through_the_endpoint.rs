//! The official OpenAI Python client (installed by `scripts/setup.sh
//! --test` into `.cache/pyenv`) streams speech from `/v1/audio/speech` and
//! gets its typed error for a format the server does not produce.

use tts_tests::{python_json, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_speaks_through_the_endpoint() {
    let (worker, pipeline) = spawn_pipeline().await;
    let out = std::env::temp_dir().join(format!("openai-{}.wav", std::process::id()));
    let base = format!("http://{}/v1", pipeline.orchestrator.addr);
    let summary = python_json("openai_speech.py", vec![base, out.display().to_string()]).await;

    assert_eq!(summary["refused"]["status"], 400, "{summary}");
    assert_eq!(summary["refused"]["code"], "bad_request", "{summary}");
    assert_eq!(summary["refused"]["param"], "response_format", "{summary}");

    let wav = std::fs::read(&out).expect("the client wrote the audio");
    let _ = std::fs::remove_file(&out);
    assert_eq!(summary["bytes"], wav.len());
    assert_eq!(&wav[0..4], b"RIFF");
    let pcm: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    let seconds = pcm.len() as f64 / 24_000.0;
    assert!((1.0..6.0).contains(&seconds), "{seconds:.2} s");
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 3_000, "peak {peak}");

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
