//! The official OpenAI Python client (installed by `scripts/setup.sh
//! --test` into `.cache/pyenv`) streams speech from `/v1/audio/speech` in
//! every format the endpoint serves, MP3 when it names none (as OpenAI's
//! API), and gets its typed error for the one it does not (AAC). Each
//! file is decoded and compared with the raw PCM of the same request:
//! FLAC sample for sample, MP3 within what a lossy codec keeps.

use tts_tests::{decode, python_json, snr_db, spawn_pipeline};

fn pcm(le: &[u8]) -> Vec<i16> {
    le.chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_speaks_through_the_endpoint() {
    let (worker, pipeline) = spawn_pipeline().await;
    let dir = std::env::temp_dir().join(format!("openai-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("directory");
    let base = format!("http://{}/v1", pipeline.orchestrator.addr);
    let summary = python_json("openai_speech.py", vec![base, dir.display().to_string()]).await;
    let read = |name: &str| std::fs::read(dir.join(name)).expect("the client wrote the audio");

    assert_eq!(summary["refused"]["status"], 400, "{summary}");
    assert_eq!(summary["refused"]["code"], "bad_request", "{summary}");
    assert_eq!(summary["refused"]["param"], "response_format", "{summary}");
    for (name, content_type) in [
        ("default", "audio/mpeg"),
        ("mp3", "audio/mpeg"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm;rate=24000;channels=1"),
        ("opus", "audio/ogg;codecs=opus"),
    ] {
        let f = &summary["formats"][name];
        assert_eq!(f["content_type"], content_type, "{name}: {summary}");
        assert_eq!(f["bytes"], read(name).len(), "{name}: {summary}");
    }

    // The reference: raw 24 kHz PCM, speech of a plausible length.
    let reference = pcm(&read("pcm"));
    let seconds = reference.len() as f64 / 24_000.0;
    assert!((1.0..6.0).contains(&seconds), "{seconds:.2} s");
    let peak = reference
        .iter()
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(peak > 3_000, "peak {peak}");
    let wav = read("wav");
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(pcm(&wav[44..]), reference, "WAV carries the same samples");

    // FLAC is lossless: the same samples.
    let (flac, rate) = decode(&read("flac"), "flac");
    assert_eq!(rate, 24_000);
    assert_eq!(flac.len(), reference.len(), "FLAC length");
    assert!(flac == reference, "FLAC decodes to other samples");

    // MP3 (asked for, and by default): the same speech within a lossy
    // codec's error, delayed by at most the encoder's and decoder's
    // padding, and no shorter.
    for name in ["mp3", "default"] {
        let bytes = read(name);
        let (mp3, rate) = decode(&bytes, "mp3");
        assert_eq!(rate, 24_000, "{name}");
        assert!(
            mp3.len() >= reference.len(),
            "{name}: {} samples for {}",
            mp3.len(),
            reference.len()
        );
        let snr = snr_db(&reference, &mp3, 3_000);
        eprintln!("{name}: {} bytes, SNR {snr:.1} dB", bytes.len());
        assert!(snr > 10.0, "{name}: SNR {snr:.1} dB");
    }

    let _ = std::fs::remove_dir_all(&dir);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
