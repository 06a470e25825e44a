//! `doctor timeline` merges the real worker's and orchestrator's JSON logs
//! into one time-ordered incident timeline in which a refused request is
//! marked; `doctor redis` reports a real Redis's memory by key prefix and
//! a slow command from its slow log.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tts_client::doctor::timeline::{Range, When};
use tts_client::doctor::{self, Status};
use tts_client::{Client, Collector, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_tests::{RedisServer, ServiceProcess, eventually, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_timeline_and_redis_report_what_happened() {
    redis_reports_prefix_memory_and_the_slow_log().await;
    timeline_orders_both_services_and_marks_the_refusal().await;
}

/// A slow command: a script that spins on `TIME` for 20 ms (`DEBUG SLEEP`
/// is off by default since Redis 7).
const SPIN_20_MS: &str = "local t = redis.call('TIME') \
    local start = t[1] * 1000000 + t[2] \
    repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= 20000 \
    return 1";

async fn redis_reports_prefix_memory_and_the_slow_log() {
    let redis = RedisServer::start().await;
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let entry = format!(
        r#"{{"url":"http://127.0.0.1:50051","pad":"{}"}}"#,
        "w".repeat(300)
    );
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg("tts:worker:http://127.0.0.1:50051")
        .arg(&entry);
    for i in 0..3 {
        pipe.cmd("SET")
            .arg(format!("tts:phrase:{i:064x}"))
            .arg(vec![7u8; 20_000]);
    }
    pipe.cmd("ZADD").arg("tts:phrase-index").arg(1).arg("a");
    pipe.cmd("SET").arg("unrelated").arg("x");
    pipe.cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000);
    pipe.cmd("SLOWLOG").arg("RESET");
    pipe.query_async::<()>(&mut conn).await.expect("setup");
    redis::cmd("EVAL")
        .arg(SPIN_20_MS)
        .arg(0)
        .query_async::<i64>(&mut conn)
        .await
        .expect("a slow script");

    let f = doctor::redis::run(&redis.url).await;
    let d = &f.detail;
    assert_eq!(f.status, Status::Warn, "a 20 ms command: {}", f.to_table());
    let keys = &d["keys"];
    assert_eq!(keys["registry"]["keys"], 1, "{keys}");
    assert!(keys["registry"]["bytes"].as_u64() >= Some(300), "{keys}");
    assert_eq!(
        keys["cache"]["keys"], 4,
        "three entries and the index: {keys}"
    );
    assert!(keys["cache"]["bytes"].as_u64() >= Some(60_000), "{keys}");
    assert_eq!(keys["other"]["keys"], 1, "{keys}");
    assert_eq!(keys["truncated"], false);
    let slow = d["slowlog"].as_array().expect("slow log");
    let spin = slow
        .iter()
        .find(|e| e["command"].as_str().is_some_and(|c| c.starts_with("EVAL")))
        .unwrap_or_else(|| panic!("the script is in the slow log: {slow:?}"));
    assert!(spin["duration_us"].as_u64() >= Some(20_000), "{spin}");
    assert!(d["used_memory"].as_u64() > Some(60_000), "{d}");
    assert!(
        d["connected_clients"].as_u64() >= Some(2),
        "this test and the doctor: {d}"
    );
    assert!(
        d["ping_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0 && ms < 2_000.0)
    );
    let table = f.to_table();
    assert!(table.contains("keys tts:worker:* (registry)"), "{table}");

    let url = redis.url.clone();
    drop(redis);
    let gone = doctor::redis::run(&url).await;
    assert_eq!(gone.status, Status::Fail);
    assert!(gone.to_table().contains(&url) && gone.to_table().contains("--redis"));
}

async fn timeline_orders_both_services_and_marks_the_refusal() {
    let dir = std::env::temp_dir().join(format!("tts-timeline-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (worker_log, orch_log) = (dir.join("worker.log"), dir.join("orchestrator.log"));
    let worker = ServiceProcess::worker_logged(&[], &worker_log).await;
    let orchestrator = ServiceProcess::orchestrator_logged(
        &format!("http://{}", worker.addr),
        &["--max-requests-per-connection", "1"],
        &orch_log,
    )
    .await;
    let admin = orchestrator.admin;
    let ready = eventually(Duration::from_secs(30), || async move {
        http_get(admin, "/ready").await.0 == 200
    })
    .await;
    assert!(ready, "the orchestrator did not become ready");

    let refused_code = good_and_refused_requests(&format!("ws://{}/ws", orchestrator.addr)).await;
    assert_eq!(refused_code, ErrorCode::RateLimited);
    for (log, last) in [
        (&orch_log, "connection closed"),
        (&worker_log, "synthesis finished"),
    ] {
        let written = eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(log).is_ok_and(|t| t.contains(last))
        })
        .await;
        assert!(written, "{} has no {last:?}", log.display());
    }

    let logs = [orch_log.clone(), worker_log.clone()];
    let since: When = "10m".parse().expect("a duration");
    // Both reads end at the same instant, so a line written between them
    // cannot make their counts differ.
    let now = SystemTime::now();
    let range = Range {
        until: Some(now),
        ..Range::resolve(since, None, now)
    };
    let all = doctor::timeline::run(&range, &logs, false).expect("read logs");
    check_timeline(&all);
    let marked = doctor::timeline::run(&range, &logs, true).expect("read logs");
    check_marked(&marked, &all);

    let before: When = "9m".parse().expect("a duration");
    let empty = Range::resolve(since, Some(before), SystemTime::now());
    let none = doctor::timeline::run(&empty, &logs, false).expect("read logs");
    let sentence = &none.rows[0][0];
    assert!(
        sentence.starts_with("No log line falls between"),
        "{sentence}"
    );
    for log in &logs {
        assert!(sentence.contains(&log.display().to_string()), "{sentence}");
    }
    let missing = dir.join("missing.log");
    let error =
        doctor::timeline::run(&range, std::slice::from_ref(&missing), false).expect_err("missing");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request that completes and, while it is in flight, one that the
/// connection's limit of one refuses; returns the refusal's code.
async fn good_and_refused_requests(ws_url: &str) -> ErrorCode {
    let mut client = Client::connect(ws_url).await.expect("connect");
    let opts = |id: &str| SynthesizeOptions {
        request_id: Some(id.into()),
        ..SynthesizeOptions::default()
    };
    client
        .start("A sentence that is spoken in real time.", &opts("good-1"))
        .await
        .expect("send");
    client
        .start("This one finds no room.", &opts("refused-1"))
        .await
        .expect("send");
    let mut good = Collector::new("good-1".into(), Instant::now());
    let mut refused = None;
    loop {
        let event = client.next_event().await.expect("an event");
        if let Event::Message(ServerMessage::Error {
            code,
            request_id: Some(id),
            ..
        }) = &event
            && id == "refused-1"
        {
            refused = Some(*code);
            continue;
        }
        if let Some(done) = good.on_event(event).expect("the good request") {
            assert!(done.report.frames > 0 && done.report.integrity_failures() == 0);
            break;
        }
    }
    refused.expect("the second request was answered with an error")
}

fn rows(f: &doctor::Findings) -> &[Value] {
    f.detail["timeline"].as_array().expect("timeline")
}

/// Where the first row with this request id, component and message is.
fn position(rows: &[Value], request: &str, component: &str, message: &str) -> usize {
    rows.iter()
        .position(|r| {
            r["request_id"] == request
                && r["component"] == component
                && r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
        })
        .unwrap_or_else(|| panic!("no {component} {message:?} for {request}: {rows:#?}"))
}

fn check_timeline(f: &doctor::Findings) {
    let rows = rows(f);
    let stamps: Vec<&str> = rows
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap_or(""))
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "sorted: {stamps:?}"
    );
    let offsets: Vec<f64> = rows
        .iter()
        .map(|r| r["offset_ms"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(offsets.first(), Some(&0.0));
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");

    let accepted = position(rows, "good-1", "orchestrator", "request accepted");
    let queued = position(rows, "good-1", "worker", "synthesis queued");
    let finished = position(rows, "good-1", "orchestrator", "request finished");
    let refusal = rows
        .iter()
        .position(|r| r["request_id"] == "refused-1")
        .unwrap_or_else(|| panic!("no line for the refused request: {rows:#?}"));
    assert!(accepted < queued && queued < finished, "{rows:#?}");
    assert!(
        accepted < refusal && refusal < finished,
        "refused while the first was in flight"
    );
    let r = &rows[refusal];
    assert_eq!(r["mark"], "refused", "{r}");
    assert_eq!(r["component"], "orchestrator", "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("code=rate_limited")),
        "{r}"
    );
    assert_eq!(rows[finished]["mark"], Value::Null, "a plain info line");

    let counts = &f.detail["counts"];
    assert!(
        counts["orchestrator"]["refused"].as_u64() >= Some(1),
        "{counts}"
    );
    assert!(counts["worker"]["lines"].as_u64() > Some(0), "{counts}");
    let total: u64 = ["orchestrator", "worker"]
        .iter()
        .filter_map(|c| counts[c]["lines"].as_u64())
        .sum();
    assert_eq!(f.detail["lines"].as_u64(), Some(total), "{counts}");
    assert_eq!(rows.len() as u64, total);
    let worrying = ["orchestrator", "worker"]
        .iter()
        .any(|c| counts[c]["errors"] != 0 || counts[c]["breaker"] != 0);
    let expected = if worrying { Status::Warn } else { Status::Ok };
    assert_eq!(f.status, expected, "{}", f.to_table());
    assert!(f.to_table().contains("summary"));
}

fn check_marked(marked: &doctor::Findings, all: &doctor::Findings) {
    let rows = rows(marked);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| !r["mark"].is_null()), "{rows:#?}");
    assert!(rows.iter().any(|r| r["request_id"] == "refused-1"));
    assert!(rows.len() < self::rows(all).len());
    assert_eq!(marked.detail["counts"], all.detail["counts"]);
}
