//! The HTTP side: `GET /faults`, `POST /faults`, `DELETE /faults`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{ActiveFault, FaultError, FaultRequest, Faults, KINDS};

/// `GET /faults` (open), `POST /faults` and `DELETE /faults[?kind=K]`
/// (both need the admin token).
pub fn routes(faults: Arc<Faults>) -> axum::Router {
    axum::Router::new()
        .route("/faults", get(list).post(start).delete(stop))
        .with_state(faults)
}

/// What `GET /faults` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    /// Whether faults may be started here.
    pub enabled: bool,
    /// The kinds this process applies.
    pub kinds: Vec<String>,
    /// The faults active now.
    pub active: Vec<ActiveFault>,
}

async fn list(State(faults): State<Arc<Faults>>) -> Json<Listing> {
    Json(Listing {
        enabled: faults.enabled(),
        kinds: faults.kinds().map(str::to_owned).collect(),
        active: faults.list(),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn refusal(e: &FaultError) -> Response {
    (
        e.status(),
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn start(
    State(faults): State<Arc<Faults>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = faults.authorize(bearer(&headers)) {
        return refusal(&e);
    }
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(&FaultError::Invalid(format!(
                "expected {{\"kind\": one of {KINDS:?}, parameters…, \"duration_s\": seconds}}: {e}"
            )));
        }
    };
    let duration = Duration::try_from_secs_f64(request.duration_s).unwrap_or(Duration::ZERO);
    match faults.start(request.fault, duration) {
        Ok(active) => (StatusCode::CREATED, Json(active)).into_response(),
        Err(e) => refusal(&e),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    kind: Option<String>,
}

async fn stop(
    State(faults): State<Arc<Faults>>,
    headers: HeaderMap,
    Query(query): Query<StopQuery>,
) -> Response {
    if let Err(e) = faults.authorize(bearer(&headers)) {
        return refusal(&e);
    }
    let stopped = faults.stop(query.kind.as_deref());
    Json(serde_json::json!({ "stopped": stopped })).into_response()
}
