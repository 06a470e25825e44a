//! One-off checks: a probe for container health checks, Redis `PING`,
//! and whether a port listens.

use std::time::Duration;

use super::rows::{Row, findings, row};
use super::worker::worker_health;
use super::{Findings, get, http_client};
use crate::doctor::Status;

/// One probe: a worker's gRPC health (`grpc`) or an HTTP 200 (`http`).
pub async fn probe(grpc: Option<&str>, http: Option<&str>) -> Findings {
    let row = match (grpc, http) {
        (Some(url), _) => worker_health(url).await,
        (None, Some(url)) => match get(&http_client(), url).await {
            Ok((200, _)) => row("http", Status::Ok, format!("{url}: 200")),
            Ok((code, body)) => row(
                "http",
                Status::Fail,
                format!(
                    "{url}: HTTP {code} {}",
                    body.chars().take(200).collect::<String>()
                ),
            ),
            Err(e) => row("http", Status::Fail, format!("{url}: {e}")),
        },
        (None, None) => row("probe", Status::Fail, "nothing to probe"),
    };
    findings(vec![row])
}

pub(super) async fn redis_ping(url: &str) -> Row {
    let ping = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(pong)) => row("redis PING", Status::Ok, pong),
        Ok(Err(e)) => row("redis PING", Status::Fail, e.to_string()),
        Err(_) => row("redis PING", Status::Fail, "no answer within 2 s"),
    }
}

/// Whether the host:port of `url` accepts TCP connections.
pub(super) async fn port_open(name: &str, url: &str) -> Row {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let connect = tokio::net::TcpStream::connect(authority);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => row(format!("listening: {name}"), Status::Ok, authority),
        Ok(Err(e)) => row(
            format!("listening: {name}"),
            Status::Fail,
            format!("{authority}: {e}"),
        ),
        Err(_) => row(
            format!("listening: {name}"),
            Status::Fail,
            format!("{authority}: timed out"),
        ),
    }
}
