//! A phrase cache entry whose bytes were changed in Redis (one bit of one
//! frame) is never replayed: the lookup finds that a frame fails its
//! checksum, deletes the entry and counts it `corrupt`; the worker speaks
//! the phrase, every frame verified, and a good copy replaces the entry.

use std::time::Duration;

use tts_client::{Client, SynthesizeOptions, Utterance};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    RedisServer, eventually, sample, spawn_metered_pipeline, voices_listed, worker_config,
};

const PHRASE: &str = "A stitch in time saves nine.";

async fn say(ws: &str) -> Utterance {
    let mut client = Client::connect(ws).await.expect("connect");
    client.timeout = Duration::from_secs(30);
    let u = client
        .synthesize(PHRASE, &SynthesizeOptions::default())
        .await
        .expect("the request completes");
    assert_eq!(u.report.integrity_failures(), 0, "{:?}", u.report);
    assert_eq!(u.report.frames, u.report.end_frames);
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_entry_is_deleted_and_spoken_again() {
    let redis = RedisServer::start().await;
    let config = OrchestratorConfig {
        redis_url: Some(redis.url.clone()),
        phrase_cache: true,
        ..OrchestratorConfig::default()
    };
    let (metrics, worker, pipeline) = spawn_metered_pipeline(worker_config(), config).await;
    let ws = pipeline.ws_url.clone();
    let count = |series: &str| sample(&metrics.render(), series);
    let stored = r#"tts_orchestrator_phrase_cache_stores_total{result="stored"}"#;
    let hits = r#"tts_orchestrator_phrase_cache_lookups_total{result="hit"}"#;
    let corrupt = r#"tts_orchestrator_phrase_cache_lookups_total{result="corrupt"}"#;
    let at_worker = r#"tts_worker_requests_total{outcome="completed"}"#;
    let admin = pipeline.admin;
    let listed = voices_listed(admin).await;
    assert!(listed, "the worker's voices are listed");

    let first = say(&ws).await;
    assert!(eventually(Duration::from_secs(5), || async { count(stored) >= 1.0 }).await);

    // One bit of the last frame's payload flipped, the entry's expiry kept.
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
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut entry: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("GET");
    let at = entry.len() - 10;
    entry[at] ^= 0x10;
    let () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(entry)
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .expect("SET");

    // Spoken again: by the worker, intact; the entry counted and deleted.
    let again = say(&ws).await;
    assert_eq!(count(corrupt), 1.0, "{}", metrics.render());
    assert_eq!(count(hits), 0.0, "a corrupt entry is not a hit");
    assert_eq!(count(at_worker), 2.0, "the worker spoke it again");
    assert_eq!(again.report.end_frames, again.report.frames);
    assert!(first.report.frames > 20);

    // A good copy replaced it: the next time is a verified replay.
    assert!(eventually(Duration::from_secs(5), || async { count(stored) >= 2.0 }).await);
    say(&ws).await;
    assert_eq!(count(hits), 1.0, "the good copy replays");
    assert_eq!(count(corrupt), 1.0);

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
