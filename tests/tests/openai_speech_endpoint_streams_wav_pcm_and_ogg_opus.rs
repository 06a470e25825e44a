//! `POST /v1/audio/speech` in OpenAI's shape: WAV, raw PCM and Ogg Opus
//! bodies that decode to speech, errors as OpenAI error JSON with the
//! WebSocket codes, and `GET /v1/voices`.

use std::io::Cursor;
use std::time::{Duration, Instant};

use tts_tests::{http_get, http_post, spawn_pipeline};

const TEXT: &str = "Speech over plain HTTP, as the OpenAI client asks for it.";

fn samples(le: &[u8]) -> Vec<i16> {
    le.chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

fn level(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64)
        .sqrt()
}

fn error_of(body: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON error body");
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_speech_endpoint_streams_wav_pcm_and_ogg_opus() {
    let (worker, pipeline) = spawn_pipeline().await;
    let addr = pipeline.orchestrator.addr;
    let body = |format: &str| {
        format!(
            r#"{{"model":"tts-1","input":"{TEXT}","voice":"alloy","response_format":"{format}"}}"#
        )
    };

    // WAV: a streaming header, then 24 kHz speech.
    let wav = http_post(addr, "/v1/audio/speech", &body("wav"), &[]).await;
    assert_eq!(wav.status, 200, "{}", wav.headers);
    assert!(wav.headers.contains("audio/wav"), "{}", wav.headers);
    assert_eq!(&wav.body[0..4], b"RIFF");
    assert_eq!(&wav.body[36..40], b"data");
    assert_eq!(
        u32::from_le_bytes(wav.body[24..28].try_into().expect("4")),
        24_000
    );
    let pcm = samples(&wav.body[44..]);
    let seconds = pcm.len() as f64 / 24_000.0;
    assert!((2.0..8.0).contains(&seconds), "{seconds:.2} s of audio");
    assert!(level(&pcm) > 500.0, "level {:.0}", level(&pcm));

    // As fast as synthesised by default; on the playout clock when asked,
    // so that the paced answer lasts about as long as its audio (less the
    // second sent ahead), and the default one less than that.
    let long = format!("{TEXT} {TEXT}");
    let timed = |delivery: &'static str| {
        let json = format!(r#"{{"input":"{long}","response_format":"pcm"{delivery}}}"#);
        async move {
            let started = Instant::now();
            let answer = http_post(addr, "/v1/audio/speech", &json, &[]).await;
            assert_eq!(answer.status, 200);
            (started.elapsed(), answer.body.len())
        }
    };
    let (fast_took, fast_bytes) = timed("").await;
    let (paced_took, paced_bytes) = timed(r#","delivery":"realtime""#).await;
    let audio = Duration::from_secs_f64(paced_bytes as f64 / 2.0 / 24_000.0);
    eprintln!(
        "{:.2} s of audio: {:.2} s by default, {:.2} s paced",
        audio.as_secs_f64(),
        fast_took.as_secs_f64(),
        paced_took.as_secs_f64()
    );
    assert!(fast_bytes > 0 && paced_bytes > 0);
    assert!(
        paced_took + Duration::from_millis(1_500) >= audio,
        "the paced answer took {paced_took:?} for {audio:?} of audio"
    );
    assert!(
        fast_took < paced_took,
        "the default answer ({fast_took:?}) was not faster than the paced one ({paced_took:?})"
    );

    // PCM at a requested rate.
    let raw = http_post(
        addr,
        "/v1/audio/speech",
        &format!(r#"{{"input":"{TEXT}","response_format":"pcm","sample_rate":16000}}"#),
        &[],
    )
    .await;
    assert_eq!(raw.status, 200);
    assert!(raw.headers.contains("rate=16000"), "{}", raw.headers);
    let pcm16 = samples(&raw.body);
    let s16 = pcm16.len() as f64 / 16_000.0;
    assert!(
        (s16 / seconds - 1.0).abs() < 0.25,
        "{s16:.2} s vs {seconds:.2} s"
    );

    // Ogg Opus: valid pages, OpusHead and OpusTags, packets that decode.
    let ogg = http_post(addr, "/v1/audio/speech", &body("opus"), &[]).await;
    assert_eq!(ogg.status, 200);
    assert!(ogg.headers.contains("audio/ogg"), "{}", ogg.headers);
    let mut reader = ogg::PacketReader::new(Cursor::new(&ogg.body));
    let head = reader.read_packet_expected().expect("OpusHead");
    assert_eq!(&head.data[0..8], b"OpusHead");
    let tags = reader.read_packet_expected().expect("OpusTags");
    assert_eq!(&tags.data[0..8], b"OpusTags");
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
    let (mut decoded, mut packets, mut last_granule) = (Vec::new(), 0, 0);
    while let Some(packet) = reader.read_packet().expect("a valid page") {
        if packet.data.is_empty() {
            assert!(packet.last_in_stream(), "only the closing packet is empty");
            last_granule = packet.absgp_page();
            continue;
        }
        let mut pcm = [0i16; 960];
        let n = decoder
            .decode(&packet.data, &mut pcm, false)
            .expect("decodes");
        decoded.extend_from_slice(&pcm[..n]);
        packets += 1;
    }
    assert!(packets > 50, "{packets} packets");
    assert!(
        level(&decoded) > 500.0,
        "decoded level {:.0}",
        level(&decoded)
    );
    let opus_seconds = decoded.len() as f64 / 48_000.0;
    assert!((opus_seconds / seconds - 1.0).abs() < 0.25);
    assert!(
        last_granule > 0,
        "the stream ends with its final granule position"
    );
    let opus_bytes = ogg.body.len() as f64 / opus_seconds;
    assert!(
        opus_bytes < 8_000.0,
        "{opus_bytes:.0} bytes/s (PCM is 96,000)"
    );

    // Errors in OpenAI's shape, with the WebSocket error codes.
    for (json, status, code, param) in [
        (
            r#"{"input":"   "}"#.to_owned(),
            400,
            "empty_text",
            Some("input"),
        ),
        (body("aac"), 400, "bad_request", Some("response_format")),
        (
            r#"{"input":"Hi","speed":9}"#.to_owned(),
            400,
            "bad_request",
            Some("speed"),
        ),
        (
            r#"{"voice":"alloy"}"#.to_owned(),
            400,
            "bad_request",
            Some("input"),
        ),
        (
            r#"{"input":"Hi","voice":"nobody"}"#.to_owned(),
            400,
            "unknown_voice",
            Some("voice"),
        ),
        (
            r#"{"input":"Hi","timestamps":true}"#.to_owned(),
            400,
            "bad_request",
            Some("timestamps"),
        ),
        // Over the 64 KiB body limit: 413, in the same shape.
        (
            format!(r#"{{"input":"{}"}}"#, "a".repeat(70_000)),
            413,
            "bad_request",
            Some("input"),
        ),
    ] {
        let answer = http_post(addr, "/v1/audio/speech", &json, &[]).await;
        assert_eq!(answer.status, status, "{json}: {}", answer.headers);
        let error = error_of(&answer.body);
        assert_eq!(error["code"], code, "{json}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error["param"].as_str(), param, "{json}: {error}");
    }

    // The models OpenAI front ends list before they speak.
    let (status, models) = http_get(addr, "/v1/models").await;
    assert_eq!(status, 200, "{models}");
    let models: serde_json::Value = serde_json::from_str(&models).expect("JSON");
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"tts-1") && ids.contains(&"tts-1-hd"),
        "{ids:?}"
    );
    // Unknown paths and methods answer in the same JSON shape.
    let (status, body) = http_get(addr, "/v1/nothing").await;
    assert_eq!(status, 404);
    let error = error_of(body.as_bytes());
    assert_eq!(error["code"], "not_found", "{error}");
    let (status, body) = http_get(addr, "/v1/audio/speech").await;
    assert_eq!(status, 405);
    assert_eq!(error_of(body.as_bytes())["code"], "method_not_allowed");

    let (status, voices) = http_get(addr, "/v1/voices").await;
    assert_eq!(status, 200);
    let voices: serde_json::Value = serde_json::from_str(&voices).expect("JSON");
    assert_eq!(voices["default_voice"], "en_US-joe-medium");
    assert!(
        voices["voices"].as_array().is_some_and(|v| v.len() >= 2),
        "{voices}"
    );

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
