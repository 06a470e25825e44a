//! Workers announced in a real `redis-server`.
//!
//! - One is used within a heartbeat of starting, and dropped within its
//!   entry's time to live after it is killed (no goodbye).
//! - An entry whose URL `--registry-allow` does not match is never used;
//!   a deleted entry leaves the pool at the next read, but a Redis that
//!   is away longer than an entry's time to live and restarts empty drops
//!   no one that answers.
//! - An orchestrator whose only workers are the registry's answers the
//!   first request it accepts.
//! - Readiness checks Redis over one connection, however often asked.
//! - Redis stopped: the static worker keeps serving and readiness says
//!   `degraded` with the reason.
//! - Redis back: both sides reconnect by themselves and the registered
//!   worker is found again.

use std::time::{Duration, Instant};

use serde_json::Value;
use tts_client::{Client, SynthesizeOptions};
use tts_tests::{RedisServer, ServiceProcess, eventually, http_get};

const TEXT: &str = "The early bird catches the worm.";
const TTL_SECS: f64 = 1.5;
/// The registry workers this orchestrator may use.
const ALLOW: &str = "http://127.0.0.1:*";

async fn ready(orchestrator: &ServiceProcess) -> Value {
    let (_, body) = http_get(orchestrator.admin, "/ready").await;
    serde_json::from_str(&body).expect("/ready is JSON")
}

fn listed(ready: &Value, url: &str) -> Option<Value> {
    ready["workers"]
        .as_array()?
        .iter()
        .find(|w| w["url"] == url)
        .cloned()
}

/// Whether `/ready` lists `url` (or, with `present` false, no longer
/// does) within `limit`.
async fn until_listed(
    orchestrator: &ServiceProcess,
    url: &str,
    present: bool,
    limit: Duration,
) -> bool {
    eventually(limit, || async move {
        listed(&ready(orchestrator).await, url).is_some() == present
    })
    .await
}

async fn speak(ws: &str) {
    let mut client = Client::connect(ws).await.expect("connect");
    client.timeout = Duration::from_secs(30);
    let u = client
        .synthesize(TEXT, &SynthesizeOptions::default())
        .await
        .expect("request completes");
    assert_eq!(u.report.integrity_failures(), 0);
    assert_eq!(u.report.frames, u.report.end_frames);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_found_through_redis_come_and_go() {
    let mut redis = RedisServer::start().await;
    let ttl = TTL_SECS.to_string();
    let static_worker = ServiceProcess::worker(&[]).await;
    let static_url = format!("http://{}", static_worker.addr);
    let orchestrator = ServiceProcess::orchestrator(
        &static_url,
        &["--redis-url", &redis.url, "--registry-allow", ALLOW],
    )
    .await;
    let ws = format!("ws://{}/ws", orchestrator.addr);

    // A worker that announces itself is routed to within a heartbeat
    // (a third of the TTL) and a registry read (0.5 s) of serving.
    let registered =
        ServiceProcess::worker(&["--redis-url", &redis.url, "--registry-ttl-secs", &ttl]).await;
    let registered_url = format!("http://{}", registered.addr);
    let serving_at = Instant::now();
    let found = eventually(Duration::from_secs(10), || {
        let o = &orchestrator;
        let url = registered_url.clone();
        async move {
            listed(&ready(o).await, &url)
                .is_some_and(|w| w["serving"] == true && w["source"] == "registry")
        }
    })
    .await;
    let took = serving_at.elapsed();
    eprintln!("registered worker in use {took:?} after it served");
    assert!(found, "the registered worker is listed");
    assert!(
        took < Duration::from_secs_f64(TTL_SECS / 3.0 + 0.5 + 1.5),
        "within one heartbeat and one registry read (with slack for a loaded machine): {took:?}"
    );
    // Both workers take requests.
    for _ in 0..4 {
        speak(&ws).await;
    }
    // An orchestrator started now, with no worker but the registry's,
    // answers the first request it accepts, however early (it reads the
    // registry first).
    let fresh = ServiceProcess::registry_orchestrator_spawned(&[
        "--redis-url",
        &redis.url,
        "--registry-allow",
        ALLOW,
    ]);
    let fresh_ws = format!("ws://{}/ws", fresh.addr);
    let connect_by = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match Client::connect(&fresh_ws).await {
            Ok(client) => break client,
            Err(e) => assert!(Instant::now() < connect_by, "never listened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let first = client
        .synthesize(TEXT, &SynthesizeOptions::default())
        .await
        .map(|u| u.report.frames);
    assert!(first.is_ok(), "the first request: {first:?}");
    drop(fresh);
    let (_, m) = http_get(registered.admin, "/metrics").await;
    assert!(
        tts_tests::sample(&m, r#"tts_worker_requests_total{outcome="completed"}"#) >= 1.0,
        "the registered worker spoke:\n{m}"
    );

    // Entries written by hand: one whose URL is not allowed (the same
    // worker under another name) is never used and gets no token; one
    // allowed but then deleted leaves the pool at the next read, not when
    // its hour-long time to live runs out.
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let port = registered.addr.port();
    let foreign = format!("http://localhost:{port}");
    let spare = ServiceProcess::worker(&[]).await;
    let deleted = format!("http://{}", spare.addr);
    for url in [&foreign, &deleted] {
        let entry = tts_redis::registry::Entry {
            url: url.clone(),
            voices: vec![],
            threads: 2,
            version: "hand-written".into(),
        };
        let () = redis::cmd("SET")
            .arg(tts_redis::registry::key(url))
            .arg(entry.to_json())
            .arg("PX")
            .arg(3_600_000)
            .query_async(&mut conn)
            .await
            .expect("SET");
    }
    let listed_deleted = until_listed(&orchestrator, &deleted, true, Duration::from_secs(10)).await;
    assert!(listed_deleted, "the allowed hand-written entry is used");
    let r = ready(&orchestrator).await;
    assert!(
        listed(&r, &foreign).is_none(),
        "a URL not allowed is used: {r}"
    );
    // The read that listed one entry may still be on its way to the
    // other (entries are read in the order SCAN gives them).
    let refusals = || async {
        let (_, m) = http_get(orchestrator.admin, "/metrics").await;
        tts_tests::sample(
            &m,
            r#"tts_orchestrator_registry_events_total{event="refused"}"#,
        )
    };
    let refused = eventually(Duration::from_secs(5), || async { refusals().await == 1.0 }).await;
    assert!(
        refused,
        "the URL not allowed is refused: {}",
        refusals().await
    );
    let () = redis::cmd("DEL")
        .arg(tts_redis::registry::key(&deleted))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let deleted_at = Instant::now();
    let gone = until_listed(&orchestrator, &deleted, false, Duration::from_secs(10)).await;
    let took = deleted_at.elapsed();
    eprintln!("deleted entry's worker dropped {took:?} after the DEL");
    assert!(
        gone && took < Duration::from_secs(3),
        "a deleted entry stays: {took:?}"
    );
    drop(spare);
    assert_eq!(
        refusals().await,
        1.0,
        "refused once, however often it is read"
    );

    // Killed without a goodbye: gone within one TTL (nothing else drops a
    // registry worker: without expiry it would stay listed).
    registered.signal("KILL");
    let killed_at = Instant::now();
    drop(registered);
    let gone = until_listed(
        &orchestrator,
        &registered_url,
        false,
        Duration::from_secs(10),
    )
    .await;
    let took = killed_at.elapsed();
    eprintln!("killed worker dropped {took:?} after the kill");
    assert!(gone, "the dead worker leaves the pool");
    assert!(
        took < Duration::from_secs_f64(TTL_SECS + 0.5 + 0.5),
        "within one TTL and a registry read (with slack for a loaded machine): {took:?}"
    );
    speak(&ws).await;

    // Readiness checks Redis over one shared connection, not one each.
    let connections = || async {
        // This connection counts too: one for each call.
        let client = redis::Client::open(redis.url.as_str()).expect("url");
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut redis)
            .await
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("total_connections_received")
    };
    let before = connections().await;
    for _ in 0..50 {
        assert_eq!(
            ready(&orchestrator).await["checks"]["redis"]["status"],
            "ok"
        );
    }
    let opened = connections().await - before;
    assert!(
        opened <= 2,
        "50 readiness checks opened {opened} Redis connections"
    );

    // Redis goes away: the static worker serves on, readiness degrades.
    redis.kill();
    let degraded = eventually(Duration::from_secs(10), || async {
        let r = ready(&orchestrator).await;
        r["status"] == "degraded" && r["checks"]["redis"]["status"] == "warn"
    })
    .await;
    let r = ready(&orchestrator).await;
    assert!(degraded, "readiness says degraded: {r}");
    assert!(
        r["checks"]["redis"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("redis")),
        "{r}"
    );
    speak(&ws).await;

    // Redis comes back (empty): a worker announcing itself is found again
    // through the orchestrator's own reconnection.
    let comeback =
        ServiceProcess::worker(&["--redis-url", &redis.url, "--registry-ttl-secs", &ttl]).await;
    redis.restart().await;
    let comeback_url = format!("http://{}", comeback.addr);
    let healthy = eventually(Duration::from_secs(15), || {
        let o = &orchestrator;
        let url = comeback_url.clone();
        async move {
            let r = ready(o).await;
            r["status"] == "healthy" && listed(&r, &url).is_some_and(|w| w["serving"] == true)
        }
    })
    .await;
    assert!(healthy, "reconnected: {}", ready(&orchestrator).await);
    speak(&ws).await;

    // Redis goes away for longer than the comeback worker's time to live
    // and restarts empty: the workers it knew, answering their polls, are
    // kept until they renew their entries (neither a missed renewal nor an
    // empty registry is a worker leaving). This one renews every 2 s, so
    // the orchestrator reads the empty registry well before it is
    // announced again.
    let steady =
        ServiceProcess::worker(&["--redis-url", &redis.url, "--registry-ttl-secs", "6"]).await;
    let steady_url = format!("http://{}", steady.addr);
    let found = until_listed(&orchestrator, &steady_url, true, Duration::from_secs(15)).await;
    assert!(found, "the steady worker registers");
    redis.kill();
    tokio::time::sleep(Duration::from_secs_f64(TTL_SECS + 0.5)).await;
    redis.restart().await;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let r = ready(&orchestrator).await;
        assert!(
            listed(&r, &steady_url).is_some() && listed(&r, &comeback_url).is_some(),
            "dropped after Redis restarted empty: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    speak(&ws).await;
}
