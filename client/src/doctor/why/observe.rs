//! What `doctor why` looks at: every service's metrics at the start and
//! the end of the window (or a Prometheus server's samples at both ends),
//! the orchestrator's `/info` and `/ready`, each worker's `GetLoad` and
//! whether its ports accept connections, deep pings through the
//! orchestrator during the window, and a Redis `PING`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tts_proto::v1::LoadReport;
use tts_proto::v1::tts_client::TtsClient;

use super::Options;
use crate::doctor::health::error_text;
use crate::doctor::prom::{Exposition, Sample};

/// How long any one probe may take: a service that does not answer in
/// this time is not answering.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the orchestrator's `/info` and `/ready` may take: they ask
/// every worker in turn with a 2 s timeout of their own, so a silent
/// worker must not make them look like a silent orchestrator.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(6);

/// A service's metrics at both ends of the window.
#[derive(Debug, Default)]
pub(crate) struct Scrapes {
    pub(crate) start: Option<Exposition>,
    pub(crate) end: Option<Exposition>,
    /// Why the last scrape that failed failed.
    pub(crate) error: Option<String>,
}

/// Whether a worker answers, at the end of the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reach {
    /// Its metrics or `GetLoad` answered.
    Answers,
    /// Its port accepts connections but nothing answers within the probe
    /// timeout: the process is stopped or wedged.
    Silent(String),
    /// Its port refuses or cannot be reached.
    Unreachable(String),
}

/// One worker as observed.
#[derive(Debug)]
pub(crate) struct WorkerSeen {
    pub(crate) url: String,
    /// `cpu` or `cuda:N`, from `/info`.
    pub(crate) device: String,
    pub(crate) metrics: Scrapes,
    pub(crate) load: Result<LoadReport, String>,
    pub(crate) reach: Reach,
    /// The highest utilisation its `GetLoad` reported during the window
    /// (polled twice a second: refusals come at the peaks).
    pub(crate) peak_utilisation: Option<f64>,
}

/// A deep ping's answer: the orchestrator's gRPC round trip to a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ping {
    /// The round trip, ms, when the worker answered.
    pub(crate) worker_ms: Option<f64>,
}

/// Everything observed.
#[derive(Debug)]
pub(crate) struct Observation {
    pub(crate) window: Duration,
    pub(crate) orchestrator: Scrapes,
    /// `/ready` at the end of the window.
    pub(crate) ready: Option<Value>,
    pub(crate) workers: Vec<WorkerSeen>,
    /// Deep pings sent during the window (empty with `--prometheus`).
    pub(crate) pings: Vec<Ping>,
    /// Redis: its URL and the doctor's own `PING` (ms, or why not).
    pub(crate) redis: Option<(String, Result<f64, String>)>,
}

/// `doctor why` could not observe the pipeline at all.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The orchestrator's admin listener does not answer.
    #[error(
        "cannot reach the orchestrator's admin listener at {url}: {reason} (is it running? pass --orchestrator URL)"
    )]
    Orchestrator {
        /// Where it was looked for.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The Prometheus server did not answer a query.
    #[error("Prometheus at {url}: {reason}")]
    Prometheus {
        /// The server.
        url: String,
        /// Why not.
        reason: String,
    },
}

/// Where the parts are, from the orchestrator's `/info`.
#[derive(Debug, Default)]
struct Discovered {
    websocket_url: Option<String>,
    /// gRPC URL, metrics URL, device.
    workers: Vec<(String, Option<String>, String)>,
    redis_url: Option<String>,
}

fn discovered(info: &Value) -> Discovered {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    Discovered {
        websocket_url: text(&info["websocket_url"]),
        workers: info["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| {
                Some((
                    text(&w["url"])?,
                    text(&w["metrics_url"]),
                    text(&w["device"]).unwrap_or_else(|| "cpu".into()),
                ))
            })
            .collect(),
        redis_url: text(&info["redis_url"]),
    }
}

/// Observes the pipeline for the window.
pub(crate) async fn observe(opts: &Options) -> Result<Observation, ObserveError> {
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .unwrap_or_default();
    let admin = reqwest::Client::builder()
        .timeout(ADMIN_TIMEOUT)
        .build()
        .unwrap_or_default();
    let base = opts.orchestrator.trim_end_matches('/').to_owned();
    let info = get_json(&admin, &format!("{base}/info"))
        .await
        .map_err(|reason| ObserveError::Orchestrator {
            url: base.clone(),
            reason,
        })?;
    let found = discovered(&info);
    let ws_url = opts.ws_url.clone().or(found.websocket_url.clone());
    let redis_url = opts.redis.clone().or(found.redis_url.clone());
    let (orchestrator, metrics, pings, peaks) = match &opts.prometheus {
        Some(prometheus) => {
            let (orchestrator, metrics) =
                from_prometheus(&http, prometheus, &base, &found, opts.window).await?;
            let none = vec![None; metrics.len()];
            (orchestrator, metrics, Vec::new(), none)
        }
        None => {
            let during = During {
                ws_url: ws_url.as_deref(),
                token: opts.worker_token.as_deref(),
            };
            scrape_window(&http, &base, &found, &during, opts.window).await
        }
    };
    let ready = get_json(&admin, &format!("{base}/ready")).await.ok();
    let token = opts.worker_token.as_deref();
    let workers = see_workers(found.workers, metrics, peaks, token).await;
    let redis = match redis_url {
        Some(url) => {
            let ping = redis_ping(&url).await;
            Some((url, ping))
        }
        None => None,
    };
    Ok(Observation {
        window: opts.window,
        orchestrator,
        ready,
        workers,
        pings,
        redis,
    })
}

/// Each worker as seen at the end of the window: its scrapes, its load,
/// whether it answers, and its peak utilisation.
async fn see_workers(
    found: Vec<(String, Option<String>, String)>,
    metrics: Vec<Scrapes>,
    peaks: Vec<Option<f64>>,
    token: Option<&str>,
) -> Vec<WorkerSeen> {
    let seen = found.into_iter().zip(metrics).zip(peaks);
    futures::future::join_all(seen.map(
        |(((url, _, device), metrics), peak_utilisation)| async move {
            let load = get_load(&url, token).await;
            let reach = reach(&url, &metrics, &load).await;
            WorkerSeen {
                url,
                device,
                metrics,
                load,
                reach,
                peak_utilisation,
            }
        },
    ))
    .await
}

/// What runs during the window: deep pings through the WebSocket, and
/// load polls of each worker.
struct During<'a> {
    ws_url: Option<&'a str>,
    token: Option<&'a str>,
}

/// Scrapes every service, waits out the window while deep-pinging and
/// polling the workers' load, and scrapes again.
async fn scrape_window(
    http: &reqwest::Client,
    base: &str,
    found: &Discovered,
    during: &During<'_>,
    window: Duration,
) -> (Scrapes, Vec<Scrapes>, Vec<Ping>, Vec<Option<f64>>) {
    let targets: Vec<Option<String>> = std::iter::once(Some(format!("{base}/metrics")))
        .chain(found.workers.iter().map(|w| w.1.clone()))
        .collect();
    let mut scrapes: Vec<Scrapes> = targets.iter().map(|_| Scrapes::default()).collect();
    let started = Instant::now();
    record(&mut scrapes, scrape_all(http, &targets).await, true);
    let until = started + window;
    let pings = async {
        match during.ws_url {
            Some(url) => deep_pings(url, until).await,
            None => Vec::new(),
        }
    };
    let peaks = futures::future::join_all(
        found
            .workers
            .iter()
            .map(|(url, _, _)| peak_utilisation(url, during.token, until)),
    );
    let (pings, peaks) = tokio::join!(pings, peaks);
    tokio::time::sleep_until(until.into()).await;
    record(&mut scrapes, scrape_all(http, &targets).await, false);
    let mut scrapes = scrapes.into_iter();
    let orchestrator = scrapes.next().unwrap_or_default();
    (orchestrator, scrapes.collect(), pings, peaks)
}

/// The highest utilisation a worker's `GetLoad` reports, asked every
/// 500 ms until `until`.
async fn peak_utilisation(url: &str, token: Option<&str>, until: Instant) -> Option<f64> {
    let mut peak: Option<f64> = None;
    while Instant::now() < until {
        let next = Instant::now() + Duration::from_millis(500);
        if let Ok(load) = get_load(url, token).await {
            peak = Some(peak.map_or(load.utilisation, |p| p.max(load.utilisation)));
        }
        tokio::time::sleep_until(next.min(until).into()).await;
    }
    peak
}

fn record(scrapes: &mut [Scrapes], results: Vec<Result<Exposition, String>>, start: bool) {
    for (s, r) in scrapes.iter_mut().zip(results) {
        match r {
            Ok(e) if start => s.start = Some(e),
            Ok(e) => s.end = Some(e),
            Err(e) => s.error = Some(e),
        }
    }
}

async fn scrape_all(
    http: &reqwest::Client,
    targets: &[Option<String>],
) -> Vec<Result<Exposition, String>> {
    futures::future::join_all(targets.iter().map(|t| async move {
        match t {
            Some(url) => scrape(http, url).await,
            None => Err("no metrics address known".to_owned()),
        }
    }))
    .await
}

async fn scrape(http: &reqwest::Client, url: &str) -> Result<Exposition, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", error_text(&e)))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{url}: {}", error_text(&e)))?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    Exposition::parse(&text).map_err(|e| format!("{url}: not a Prometheus exposition: {e}"))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| error_text(&e))?;
    let text = response
        .text()
        .await
        .map_err(|e| format!("{url}: {}", error_text(&e)))?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// Deep pings through the orchestrator, one a second, until `until`.
async fn deep_pings(ws_url: &str, until: Instant) -> Vec<Ping> {
    use crate::{Client, Event, ServerMessage};
    let connect = tokio::time::timeout(PROBE_TIMEOUT, Client::connect(ws_url)).await;
    let Ok(Ok(mut client)) = connect else {
        return Vec::new();
    };
    let mut pings = Vec::new();
    let mut n = 0u32;
    while Instant::now() + Duration::from_millis(500) < until {
        let next = Instant::now() + Duration::from_secs(1);
        let id = format!("why-{n}");
        n += 1;
        let sent = client
            .send(&tts_protocol::ClientMessage::Ping {
                id: id.clone().into(),
                deep: true,
            })
            .await;
        if sent.is_err() {
            break;
        }
        // The orchestrator gives the worker 2 s; a little more here.
        let answer = tokio::time::timeout(Duration::from_millis(2_500), async {
            loop {
                match client.next_event().await {
                    Ok(Event::Message(ServerMessage::Pong {
                        id: got,
                        worker_rtt_us,
                        worker_status,
                        ..
                    })) if got == id.as_str() => {
                        let ok = worker_status.as_deref() == Some("SERVING");
                        return ok.then(|| worker_rtt_us.unwrap_or(0) as f64 / 1e3);
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        })
        .await;
        pings.push(Ping {
            worker_ms: answer.ok().flatten(),
        });
        tokio::time::sleep_until(next.min(until).into()).await;
    }
    pings
}

/// A worker's `GetLoad`, or why not.
async fn get_load(url: &str, token: Option<&str>) -> Result<LoadReport, String> {
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(PROBE_TIMEOUT)
            .connect()
            .await
            .map_err(|e| error_text(&e))?;
        let mut request = tonic::Request::new(tts_proto::v1::LoadRequest {});
        if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        TtsClient::new(channel)
            .get_load(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_owned())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Answers, is silent though its port accepts connections, or cannot be
/// reached.
async fn reach(url: &str, metrics: &Scrapes, load: &Result<LoadReport, String>) -> Reach {
    if metrics.end.is_some() || load.is_ok() {
        return Reach::Answers;
    }
    let why = load.as_ref().err().cloned().unwrap_or_default();
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let connect = tokio::net::TcpStream::connect(authority.clone());
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => Reach::Silent(match &metrics.error {
            Some(scrape) => format!("GetLoad: {why}; metrics: {scrape}"),
            None => format!("GetLoad: {why}"),
        }),
        Ok(Err(e)) => Reach::Unreachable(format!("{authority}: {e}")),
        Err(_) => Reach::Unreachable(format!("{authority}: connect timed out")),
    }
}

async fn redis_ping(url: &str) -> Result<f64, String> {
    let started = Instant::now();
    let ping = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(started.elapsed().as_secs_f64() * 1e3),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The window's two ends from a Prometheus server: every `tts_` and
/// process series of the orchestrator and of each worker, at `now −
/// window` and `now`, told apart by their `instance` label (the scrape
/// target's host:port).
async fn from_prometheus(
    http: &reqwest::Client,
    prometheus: &str,
    orchestrator: &str,
    found: &Discovered,
    window: Duration,
) -> Result<(Scrapes, Vec<Scrapes>), ObserveError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let start = instant_query(http, prometheus, now - window.as_secs_f64()).await?;
    let end = instant_query(http, prometheus, now).await?;
    let instance = |url: &str| {
        url.split("://")
            .nth(1)
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let split = |instance: &str| {
        let pick = |all: &[Sample]| {
            let mine: Vec<Sample> = all
                .iter()
                .filter(|s| s.label("instance") == Some(instance))
                .cloned()
                .collect();
            (!mine.is_empty()).then(|| Exposition::from_samples(mine))
        };
        Scrapes {
            start: pick(&start),
            end: pick(&end),
            error: None,
        }
    };
    let orchestrator = split(&instance(orchestrator));
    let workers = found
        .workers
        .iter()
        .map(|(_, metrics, _)| split(&instance(metrics.as_deref().unwrap_or_default())))
        .collect();
    Ok((orchestrator, workers))
}

/// Every pipeline series at time `at` (seconds since the epoch).
async fn instant_query(
    http: &reqwest::Client,
    prometheus: &str,
    at: f64,
) -> Result<Vec<Sample>, ObserveError> {
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let fail = |reason: String| ObserveError::Prometheus {
        url: url.clone(),
        reason,
    };
    let query = r#"{__name__=~"tts_.+|process_cpu_seconds_total"}"#;
    let at = format!("{at:.3}");
    let request = reqwest::Url::parse_with_params(&url, [("query", query), ("time", &at)])
        .map_err(|e| fail(e.to_string()))?;
    let body = get_json(http, request.as_str()).await.map_err(fail)?;
    if body["status"] != "success" {
        return Err(fail(
            body["error"].as_str().unwrap_or("query failed").into(),
        ));
    }
    Ok(body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let labels = r["metric"].as_object()?;
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some(Sample {
                name: labels.get("__name__")?.as_str()?.to_owned(),
                labels: labels
                    .iter()
                    .filter(|(k, _)| *k != "__name__")
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect(),
                value,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_parts() {
        let info = serde_json::json!({
            "websocket_url": "ws://h:8080/ws",
            "redis_url": "redis://h:6379",
            "workers": [
                {"url": "http://w1:7001", "metrics_url": "http://w1:9091/metrics", "device": "cpu"},
                {"url": "http://w2:7001", "metrics_url": "", "device": "cuda:0"},
                {"metrics_url": "no url: skipped"}
            ]
        });
        let d = discovered(&info);
        assert_eq!(d.websocket_url.as_deref(), Some("ws://h:8080/ws"));
        assert_eq!(d.redis_url.as_deref(), Some("redis://h:6379"));
        assert_eq!(d.workers.len(), 2);
        assert_eq!(d.workers[0].1.as_deref(), Some("http://w1:9091/metrics"));
        assert_eq!(d.workers[1].1, None);
        assert_eq!(d.workers[1].2, "cuda:0");
    }

    #[tokio::test]
    async fn a_port_that_refuses_is_unreachable_and_one_that_accepts_but_says_nothing_is_silent() {
        let failed = Scrapes {
            error: Some("timed out".into()),
            ..Scrapes::default()
        };
        let no_load: Result<LoadReport, String> = Err("no answer".into());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let r = reach(&format!("http://{closed}"), &failed, &no_load).await;
        assert!(matches!(r, Reach::Unreachable(_)), "{r:?}");
        // A listener nobody accepts from: the kernel completes the
        // handshake, as it does for a stopped process.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let r = reach(&format!("http://{addr}"), &failed, &no_load).await;
        assert!(matches!(r, Reach::Silent(_)), "{r:?}");
        let answered = Ok(LoadReport::default());
        assert_eq!(reach("http://x", &failed, &answered).await, Reach::Answers);
    }
}
