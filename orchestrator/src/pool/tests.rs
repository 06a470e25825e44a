//! Routing, breakers, voices and expiry, without workers.

use super::*;

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_millis(100),
        stream_window: 65_536,
        tls: None,
        auth: None,
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(50),
        poll: Duration::from_millis(500),
    }
}

fn report(pool: &Pool, url: &str, streams: u32, utilisation: f64) {
    let w = pool.find(url).expect("known worker");
    let mut s = w.state();
    s.serving = Some(true);
    s.load = Some(Load {
        streams,
        utilisation,
    });
    s.started_since_report = 0;
}

#[tokio::test]
async fn picks_the_least_loaded_and_counts_what_it_started_since() {
    let pool = Pool::new(settings());
    pool.add("http://127.0.0.1:1", None).expect("url");
    pool.add("http://127.0.0.1:2", None).expect("url");
    report(&pool, "http://127.0.0.1:1", 4, 0.4);
    report(&pool, "http://127.0.0.1:2", 1, 0.1);
    // 0.1 per stream on both: three new streams go to :2 before :1
    // (0.4) is as loaded; then they alternate.
    let mut leases = Vec::new();
    let mut to = Vec::new();
    for _ in 0..5 {
        let lease = pool.pick("", None).expect("a worker");
        to.push(lease.worker().url.clone());
        leases.push(lease);
    }
    let second = to.iter().filter(|u| u.ends_with(":2")).count();
    assert!(to[..3].iter().all(|u| u.ends_with(":2")), "{to:?}");
    assert_eq!(second, 4, "{to:?}");
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_one_probe_closes_it() {
    let pool = Pool::new(settings());
    let url = "http://127.0.0.1:1";
    pool.add(url, None).expect("url");
    report(&pool, url, 0, 0.0);
    for _ in 0..3 {
        pool.pick("", None).expect("closed").failed();
    }
    assert_eq!(pool.statuses()[0].breaker, "open");
    assert!(matches!(pool.pick("", None), Err(NoWorker::Unavailable(_))));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let probe = pool.pick("", None).expect("the probe goes through");
    assert!(pool.pick("", None).is_err(), "one probe at a time");
    probe.failed();
    assert_eq!(pool.statuses()[0].breaker, "open", "a failed probe reopens");
    tokio::time::sleep(Duration::from_millis(60)).await;
    // A probe that ends without a verdict lets the next one through.
    drop(pool.pick("", None).expect("probe"));
    pool.pick("", None).expect("probe again").succeeded();
    assert_eq!(pool.statuses()[0].breaker, "closed");
    pool.pick("", None).expect("closed again");
}

#[tokio::test]
async fn a_worker_said_not_serving_is_only_a_last_resort() {
    let pool = Pool::new(settings());
    pool.add("http://127.0.0.1:1", None).expect("url");
    pool.add("http://127.0.0.1:2", None).expect("url");
    report(&pool, "http://127.0.0.1:1", 0, 0.0);
    report(&pool, "http://127.0.0.1:2", 0, 0.9);
    pool.find("http://127.0.0.1:1").expect("w").state().serving = Some(false);
    let lease = pool.pick("", None).expect("a worker");
    assert!(lease.worker().url.ends_with(":2"), "the serving one first");
    drop(lease);
    pool.find("http://127.0.0.1:2").expect("w").state().serving = Some(false);
    // A stale answer (a worker that was loading) must not turn
    // requests away while the worker may serve by now.
    pool.pick("", None).expect("tried anyway");
}

#[tokio::test]
async fn voices_and_expiry_narrow_the_choice() {
    let pool = Pool::new(settings());
    pool.add("http://127.0.0.1:1", None).expect("url");
    let soon = Instant::now() + Duration::from_millis(30);
    pool.add("http://127.0.0.1:2", Some(soon)).expect("url");
    report(&pool, "http://127.0.0.1:1", 0, 0.0);
    report(&pool, "http://127.0.0.1:2", 0, 0.9);
    pool.find("http://127.0.0.1:1").expect("w").state().voices =
        Some([("a".to_owned(), "r1".to_owned())].into());
    assert_eq!(pool.revision("a"), Some(("a".into(), "r1".into())));
    assert_eq!(pool.revision("b"), None, "not listed by anyone yet");
    assert_eq!(pool.revision(""), None, "no default known yet");
    let lease = pool.pick("b", None).expect("only :2 may have b");
    assert!(lease.worker().url.ends_with(":2"));
    drop(lease);
    assert!(matches!(
        pool.pick("b", Some("http://127.0.0.1:2")),
        Err(NoWorker::Unavailable(_))
    ));
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(matches!(pool.pick("b", None), Err(NoWorker::NoVoice(_))));
    assert_eq!(pool.expire(Instant::now()), vec!["http://127.0.0.1:2"]);
    assert_eq!(pool.all().len(), 1);
}

#[tokio::test]
async fn a_hold_keeps_answering_registry_workers_only() {
    let pool = Pool::new(settings());
    let now = Instant::now();
    pool.add("http://127.0.0.1:1", None).expect("url");
    pool.add("http://127.0.0.1:2", Some(now)).expect("url");
    pool.add("http://127.0.0.1:3", Some(now)).expect("url");
    report(&pool, "http://127.0.0.1:2", 0, 0.0);
    pool.find("http://127.0.0.1:3").expect("w").state().serving = Some(false);
    pool.hold(now + Duration::from_secs(60));
    // The static worker gains no expiry; the one that stopped answering
    // keeps its own.
    assert_eq!(pool.expire(now), vec!["http://127.0.0.1:3"]);
    assert!(
        pool.find("http://127.0.0.1:1")
            .expect("w")
            .state()
            .expires
            .is_none()
    );
    // A hold never shortens a later expiry, and ends.
    pool.hold(now);
    assert!(pool.expire(now + Duration::from_secs(59)).is_empty());
    assert_eq!(
        pool.expire(now + Duration::from_secs(60)),
        vec!["http://127.0.0.1:2"]
    );
}
