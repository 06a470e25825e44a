//! CPU profiles on demand: `GET /debug/pprof/profile?seconds=N&format=svg|pb`
//! samples every thread of the process for N seconds and answers with a
//! flamegraph (`svg`, the default) or a pprof protobuf (`pb`, for `go tool
//! pprof` or any pprof viewer). The orchestrator serves it on its admin
//! listener (in `tts-pipeline` that profile covers the embedded worker
//! too), a worker beside its `/metrics`.
//!
//! Safety: off unless the process runs with `--allow-profiling` (404 with
//! a sentence saying so), and then only for `authorization: Bearer
//! <--admin-token>` (401); 1 to 60 s (400 otherwise); one profile at a
//! time per process (429). Sampling is a `SIGPROF` timer at 99 Hz of CPU
//! time, so a profile costs little, and an idle process yields no samples.
//! A client that goes away ends its profile at once.
//!
//! The protobuf comes from pprof's `prost-codec` feature: it ships the
//! message types pre-generated (its build script only checks a hash of the
//! `.proto`, so neither `protoc` nor code generation runs) and adds prost
//! 0.12 beside our prost 0.14. `protobuf-codec` needs `protobuf` ≥ 3.7.2,
//! which cannot share the tree with `onnx-protobuf` (its generated code
//! insists on `protobuf` 3.4.0 exactly), and runs protobuf-codegen at
//! build time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tracing::info;

use crate::AdminConfig;

/// Where the profile is served.
pub const PATH: &str = "/debug/pprof/profile";
/// Samples per second of CPU time (99, not 100, so that sampling does not
/// run in lockstep with 10 ms timers).
pub const FREQUENCY_HZ: i32 = 99;
/// The shortest profile, seconds.
pub const MIN_SECONDS: u64 = 1;
/// The longest profile, seconds.
pub const MAX_SECONDS: u64 = 60;
/// The length of a profile that does not say, seconds.
pub const DEFAULT_SECONDS: u64 = 10;
/// Libraries whose frames are not unwound (signal-unsafe or uninteresting).
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// What a profile is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A flamegraph (`image/svg+xml`).
    Svg,
    /// The pprof protobuf, uncompressed (`application/octet-stream`).
    Pb,
}

impl Format {
    /// The query value and file extension: `svg` or `pb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Pb => "pb",
        }
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Pb => "application/octet-stream",
        }
    }
}

/// A checked request for a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRequest {
    /// How long to sample, seconds ([`MIN_SECONDS`] to [`MAX_SECONDS`]).
    pub seconds: u64,
    /// What to answer with.
    pub format: Format,
}

impl ProfileRequest {
    /// Checks the query's `seconds` (default [`DEFAULT_SECONDS`]) and
    /// `format` (default `svg`).
    pub fn parse(seconds: Option<&str>, format: Option<&str>) -> Result<Self, ProfileError> {
        let seconds = match seconds {
            None => DEFAULT_SECONDS,
            Some(text) => text
                .parse()
                .ok()
                .filter(|s| (MIN_SECONDS..=MAX_SECONDS).contains(s))
                .ok_or_else(|| ProfileError::Seconds(text.to_owned()))?,
        };
        let format = match format {
            None | Some("svg") => Format::Svg,
            Some("pb") => Format::Pb,
            Some(other) => return Err(ProfileError::Format(other.to_owned())),
        };
        Ok(Self { seconds, format })
    }
}

/// Why no profile was taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The process runs without `--allow-profiling`.
    #[error("profiling is off: start the process with --allow-profiling")]
    Off,
    /// No bearer token, or the wrong one.
    #[error("unauthorized: send `authorization: Bearer <the process's --admin-token>`")]
    Unauthorized,
    /// `seconds` out of range or not a number.
    #[error("seconds must be a whole number from {MIN_SECONDS} to {MAX_SECONDS}, not {0:?}")]
    Seconds(String),
    /// `format` neither `svg` nor `pb`.
    #[error("format must be svg or pb, not {0:?}")]
    Format(String),
    /// The query string does not parse.
    #[error("bad query: {0}")]
    Query(String),
    /// A profile is being taken already.
    #[error("another profile is being taken in this process; try again when it ends")]
    Busy,
    /// The profiler or the rendering failed.
    #[error("profiling failed: {0}")]
    Failed(String),
}

impl ProfileError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Off => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Seconds(_) | Self::Format(_) | Self::Query(_) => StatusCode::BAD_REQUEST,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Who may take a profile.
struct Access {
    enabled: bool,
    token: Option<String>,
}

impl Access {
    /// Off first (say so to anyone), then the token (constant time).
    fn authorize(&self, bearer: Option<&str>) -> Result<(), ProfileError> {
        use subtle::ConstantTimeEq;
        if !self.enabled {
            return Err(ProfileError::Off);
        }
        match (&self.token, bearer) {
            (Some(token), Some(given)) if bool::from(token.as_bytes().ct_eq(given.as_bytes())) => {
                Ok(())
            }
            _ => Err(ProfileError::Unauthorized),
        }
    }
}

/// `GET /debug/pprof/profile`, answering 404 with a reason unless
/// `config` allows profiling.
pub fn routes(config: &AdminConfig) -> axum::Router {
    let access = Access {
        enabled: config.allow_profiling,
        token: config.admin_token.clone(),
    };
    axum::Router::new()
        .route(PATH, get(profile))
        .with_state(Arc::new(access))
}

#[derive(Deserialize)]
struct Params {
    seconds: Option<String>,
    format: Option<String>,
}

async fn profile(
    State(access): State<Arc<Access>>,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    let answer = async {
        access.authorize(bearer(&headers))?;
        let Query(params) = query.map_err(|e| ProfileError::Query(e.body_text()))?;
        let request = ProfileRequest::parse(params.seconds.as_deref(), params.format.as_deref())?;
        Ok::<_, ProfileError>((request.format, take(request).await?))
    };
    match answer.await {
        Ok((format, body)) => {
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(e) => (
            e.status(),
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Set while a profile is being taken: pprof's profiler is one per
/// process, and so is this.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to profile, held until dropped.
struct Slot;

impl Slot {
    fn claim() -> Option<Self> {
        // Not `then_some(Self)`: that would build, and so drop, a slot
        // (releasing the one held) when the claim fails.
        match RUNNING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(Self),
            Err(_) => None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Samples this process for `request.seconds` (waiting asynchronously)
/// and renders the result: the SVG or protobuf bytes. Dropping the future
/// stops the profile.
pub async fn take(request: ProfileRequest) -> Result<Vec<u8>, ProfileError> {
    let slot = Slot::claim().ok_or(ProfileError::Busy)?;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        .blocklist(&BLOCKLIST)
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    let (seconds, format) = (request.seconds, request.format.as_str());
    info!(seconds, format, "CPU profile started");
    tokio::time::sleep(Duration::from_secs(request.seconds)).await;
    // Symbolising is CPU work: off the runtime's threads. The slot goes
    // with the guard, so a new profile cannot start while this one renders.
    let (samples, body) = tokio::task::spawn_blocking(move || {
        let rendered = render(&guard, request);
        drop((guard, slot));
        rendered
    })
    .await
    .map_err(|e| ProfileError::Failed(e.to_string()))??;
    info!(
        seconds,
        format,
        samples,
        bytes = body.len(),
        "CPU profile taken"
    );
    Ok(body)
}

/// The report so far as `request.format`, and its number of samples.
fn render(
    guard: &pprof::ProfilerGuard<'_>,
    request: ProfileRequest,
) -> Result<(isize, Vec<u8>), ProfileError> {
    let failed = |e: pprof::Error| ProfileError::Failed(e.to_string());
    let report = guard.report().build().map_err(failed)?;
    let samples: isize = report.data.values().sum();
    let mut body = Vec::new();
    match request.format {
        Format::Svg if samples == 0 => body = idle_svg(request.seconds).into_bytes(),
        Format::Svg => {
            let mut options = pprof::flamegraph::Options::default();
            options.title = format!(
                "CPU, {} s at {FREQUENCY_HZ} Hz: {samples} samples",
                request.seconds
            );
            report
                .flamegraph_with_options(&mut body, &mut options)
                .map_err(failed)?;
        }
        Format::Pb => {
            use pprof::protos::Message;
            let profile = report.pprof().map_err(failed)?;
            profile
                .encode(&mut body)
                .map_err(|e| ProfileError::Failed(e.to_string()))?;
        }
    }
    Ok((samples, body))
}

/// What a flamegraph of no samples shows (inferno would write nothing).
fn idle_svg(seconds: u64) -> String {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"60\">\
         <text x=\"10\" y=\"35\" font-family=\"Verdana\" font-size=\"14\">\
         No CPU samples in {seconds} s: the process was idle \
         (a CPU profile counts time on a CPU, not time waiting).</text></svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// Tests that claim the process's one profile run one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn config(allow_profiling: bool) -> AdminConfig {
        AdminConfig {
            allow_profiling,
            admin_token: Some("secret".into()),
            ..AdminConfig::default()
        }
    }

    /// Status and JSON `error` of a GET at `uri`.
    async fn get(router: axum::Router, uri: &str, token: Option<&str>) -> (u16, String) {
        let mut request = Request::get(uri);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = router
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        (
            status,
            json["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn the_query_is_checked_with_defaults_and_bounds() {
        let default = ProfileRequest::parse(None, None).expect("defaults");
        assert_eq!(
            default,
            ProfileRequest {
                seconds: DEFAULT_SECONDS,
                format: Format::Svg
            }
        );
        let pb = ProfileRequest::parse(Some("60"), Some("pb")).expect("in range");
        assert_eq!((pb.seconds, pb.format), (60, Format::Pb));
        assert_eq!(
            ProfileRequest::parse(Some("1"), None)
                .map(|r| r.seconds)
                .ok(),
            Some(1)
        );
        for bad in ["0", "61", "-1", "2.5", "ten", ""] {
            let e = ProfileRequest::parse(Some(bad), None).expect_err(bad);
            assert!(matches!(e, ProfileError::Seconds(_)), "{bad}: {e}");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
        let e = ProfileRequest::parse(None, Some("png")).expect_err("png");
        assert!(matches!(e, ProfileError::Format(_)), "{e}");
    }

    #[tokio::test]
    async fn it_is_off_unless_allowed_and_needs_the_token() {
        let (status, error) = get(routes(&config(false)), PATH, Some("secret")).await;
        assert_eq!(status, 404);
        assert_eq!(
            error,
            "profiling is off: start the process with --allow-profiling"
        );
        let on = routes(&config(true));
        assert_eq!(get(on.clone(), PATH, None).await.0, 401);
        assert_eq!(get(on.clone(), PATH, Some("secre")).await.0, 401);
        assert_eq!(get(on.clone(), PATH, Some("secret2")).await.0, 401);
        // With the token, a bad query is refused before anything starts.
        let (status, error) = get(on, &format!("{PATH}?seconds=61"), Some("secret")).await;
        assert_eq!(status, 400);
        assert!(error.contains("from 1 to 60"), "{error}");
    }

    #[tokio::test]
    async fn a_second_profile_at_once_is_refused() {
        let _serial = SERIAL.lock().await;
        let held = Slot::claim().expect("no profile running");
        assert!(Slot::claim().is_none(), "two slots at once");
        let (status, error) = get(
            routes(&config(true)),
            &format!("{PATH}?seconds=1"),
            Some("secret"),
        )
        .await;
        assert_eq!(status, 429);
        assert!(error.contains("another profile"), "{error}");
        drop(held);
        assert!(Slot::claim().is_some(), "the slot was not given back");
    }

    /// Spins until `stop` is set: what the profile should see.
    #[inline(never)]
    fn busy_spin_for_the_profile(stop: &AtomicBool) -> u64 {
        let mut x = 1u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
        x
    }

    /// A 1-second profile of this process while a thread spins.
    async fn profile_while_busy(format: &str) -> (u16, String, Vec<u8>) {
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || busy_spin_for_the_profile(&stop))
        };
        let uri = format!("{PATH}?seconds=1&format={format}");
        let request = Request::get(uri)
            .header("authorization", "Bearer secret")
            .body(Body::empty())
            .expect("request");
        let response = routes(&config(true))
            .oneshot(request)
            .await
            .expect("infallible");
        stop.store(true, Ordering::Relaxed);
        spinner.join().expect("spinner");
        let status = response.status().as_u16();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        (status, content_type, body.to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_loop_shows_in_the_flamegraph_and_the_protobuf() {
        let _serial = SERIAL.lock().await;
        let (status, content_type, svg) = profile_while_busy("svg").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&svg));
        assert_eq!(content_type, "image/svg+xml");
        let svg = String::from_utf8(svg).expect("UTF-8");
        assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(500)]);
        assert!(
            svg.contains("busy_spin_for_the_profile"),
            "the spinning function is not in the flamegraph"
        );

        let (status, content_type, pb) = profile_while_busy("pb").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "application/octet-stream");
        // Field 1 (sample_type, length-delimited) comes first.
        assert_eq!(pb.first(), Some(&0x0a), "{:02x?}", &pb[..pb.len().min(16)]);
        use pprof::protos::Message;
        let profile = pprof::protos::Profile::decode(pb.as_slice()).expect("a pprof profile");
        let samples: i64 = profile.sample.iter().filter_map(|s| s.value.first()).sum();
        // 1 s of one spinning thread at 99 Hz: about 99 samples.
        assert!((30..=300).contains(&samples), "{samples} samples");
        assert!(
            profile
                .string_table
                .iter()
                .any(|s| s.contains("busy_spin_for_the_profile")),
            "the spinning function is not in the protobuf"
        );
        assert!(Slot::claim().is_some(), "the slot was not given back");
    }

    #[test]
    fn an_idle_profile_is_still_an_svg() {
        let svg = idle_svg(3);
        assert!(svg.contains("<svg") && svg.contains("No CPU samples in 3 s"));
    }
}
