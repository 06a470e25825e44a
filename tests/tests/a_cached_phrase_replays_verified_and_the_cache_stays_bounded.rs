//! The phrase cache, with a real `redis-server`: a phrase spoken once is
//! replayed from Redis the next time (never reaching the worker) with the
//! same samples, every frame verified, in any encoding; the cache's bytes
//! stay within their bound as phrases keep coming.

use std::time::Duration;

use tts_client::{Client, Encoding, SynthesizeOptions, Utterance};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    RedisServer, eventually, sample, spawn_metered_pipeline, voices_listed, worker_config,
};

const PHRASE: &str = "The early bird catches the worm.";
const BOUND: u64 = 1_000_000;

async fn say(ws: &str, text: &str, opts: &SynthesizeOptions) -> Utterance {
    let mut client = Client::connect(ws).await.expect("connect");
    client.timeout = Duration::from_secs(30);
    let u = client
        .synthesize(text, opts)
        .await
        .expect("request completes");
    assert_eq!(u.report.integrity_failures(), 0, "{:?}", u.report);
    assert_eq!(u.report.frames, u.report.end_frames);
    assert!(u.report.last_flag_seen);
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_phrase_replays_verified_and_the_cache_stays_bounded() {
    let redis = RedisServer::start().await;
    let config = OrchestratorConfig {
        redis_url: Some(redis.url.clone()),
        phrase_cache: true,
        phrase_cache_max_bytes: BOUND,
        requests_per_second_per_address: 1000,
        ..OrchestratorConfig::default()
    };
    let (metrics, worker, pipeline) = spawn_metered_pipeline(worker_config(), config).await;
    let ws = pipeline.ws_url.clone();
    let count = |series: &str| sample(&metrics.render(), series);
    let stored = r#"tts_orchestrator_phrase_cache_stores_total{result="stored"}"#;
    let hits = r#"tts_orchestrator_phrase_cache_lookups_total{result="hit"}"#;
    let from_worker = r#"tts_orchestrator_frames_total{hop="worker_to_orchestrator",result="ok"}"#;
    let from_cache =
        r#"tts_orchestrator_frames_total{hop="phrase_cache_to_orchestrator",result="ok"}"#;

    // Phrases are keyed by the voice's revision: wait until the
    // orchestrator has listed the worker's voices.
    let admin = pipeline.admin;
    let listed = voices_listed(admin).await;
    assert!(listed, "the worker's voices are listed");

    // Spoken once: a miss, then stored.
    let first = say(&ws, PHRASE, &SynthesizeOptions::default()).await;
    assert!(eventually(Duration::from_secs(5), || async { count(stored) >= 1.0 }).await);

    // Again, with its whitespace changed: replayed, identical.
    let again = say(
        &ws,
        "  The early bird\tcatches the worm. ",
        &SynthesizeOptions::default(),
    )
    .await;
    eprintln!(
        "time to first audio: {:.2} ms from the worker, {:.2} ms from the cache",
        first.report.time_to_first_audio_ms, again.report.time_to_first_audio_ms
    );
    assert_eq!(count(hits), 1.0);
    // The worker (its metrics share this process's recorder) spoke once.
    let at_worker = r#"tts_worker_requests_total{outcome="completed"}"#;
    assert_eq!(count(at_worker), 1.0, "the replay never reached the worker");
    assert_eq!(again.samples, first.samples, "the same audio");
    assert_eq!(again.report.voice, first.report.voice);
    // The cache's frames are verified like any others, on their own hop.
    assert_eq!(count(from_worker), first.report.frames as f64);
    assert_eq!(count(from_cache), first.report.frames as f64);

    // Another encoding is converted from the same entry.
    let mulaw = SynthesizeOptions {
        encoding: Some(Encoding::Mulaw),
        ..SynthesizeOptions::default()
    };
    let u = say(&ws, PHRASE, &mulaw).await;
    assert_eq!(count(hits), 2.0);
    assert_eq!(u.report.end_frames, first.report.end_frames);
    // Other options are another phrase.
    let faster = SynthesizeOptions {
        speed: Some(1.5),
        ..SynthesizeOptions::default()
    };
    say(&ws, PHRASE, &faster).await;
    assert_eq!(count(hits), 2.0, "a different speed is not a hit");

    // Phrase after phrase (fast delivery): evictions keep the total within
    // the bound.
    let fast = SynthesizeOptions {
        fast: true,
        ..SynthesizeOptions::default()
    };
    for i in 0..10 {
        say(
            &ws,
            &format!("Phrase number {i} is kept for a while."),
            &fast,
        )
        .await;
    }
    let settled = eventually(Duration::from_secs(10), || async { count(stored) >= 10.0 }).await;
    assert!(settled, "{}", metrics.render());
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tts:phrase:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut total = 0u64;
    for key in &keys {
        let len: u64 = redis::cmd("STRLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("STRLEN");
        total += len;
    }
    let evicted = count("tts_orchestrator_phrase_cache_evictions_total");
    eprintln!(
        "{} entries, {total} bytes (bound {BOUND}), {evicted} evicted",
        keys.len()
    );
    assert!(total <= BOUND, "{total} bytes");
    assert!(evicted >= 1.0, "the bound was reached and enforced");

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
