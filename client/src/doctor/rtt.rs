//! `doctor rtt`: WebSocket ping round trips, and deep pings that also make a
//! gRPC round trip to the worker.

use serde_json::json;

use super::{Findings, Percentiles, Status};
use crate::{Client, ClientError};

/// Sends `count` pings, then `count` deep pings, one at a time.
pub async fn run(url: &str, count: u32) -> Result<Findings, ClientError> {
    let mut client = Client::connect(url).await?;
    let mut ws = Vec::new();
    for id in 0..count {
        ws.push(client.ping(u64::from(id)).await?.as_secs_f64() * 1e3);
    }
    let deep = deep_pings(&mut client, count).await?;
    Ok(findings(&ws, &deep))
}

/// Deep pings' round trips: the whole one and the worker's part, ms, and
/// the worker health that was not `SERVING`.
#[derive(Default)]
struct Deep {
    rtt_ms: Vec<f64>,
    worker_ms: Vec<f64>,
    bad: Vec<String>,
}

async fn deep_pings(client: &mut Client, count: u32) -> Result<Deep, ClientError> {
    let mut deep = Deep::default();
    for id in 0..count {
        let pong = client.deep_ping(&format!("deep-{id}")).await?;
        deep.rtt_ms.push(pong.rtt.as_secs_f64() * 1e3);
        deep.worker_ms
            .push(pong.worker_rtt_us.unwrap_or(0) as f64 / 1e3);
        let status = pong.worker_status.unwrap_or_else(|| "missing".to_owned());
        if status != "SERVING" {
            deep.bad.push(status);
        }
    }
    Ok(deep)
}

fn findings(ws: &[f64], deep: &Deep) -> Findings {
    let rows = [
        ("websocket ping", Percentiles::of(ws)),
        ("deep ping (client → worker)", Percentiles::of(&deep.rtt_ms)),
        (
            "  of which orchestrator → worker gRPC",
            Percentiles::of(&deep.worker_ms),
        ),
    ];
    let status = if !deep.bad.is_empty() {
        Status::Fail
    } else {
        Status::Ok
    };
    let cell = |v: f64| format!("{v:.3}");
    Findings {
        columns: [
            "path", "count", "min ms", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|(name, p)| {
                vec![
                    (*name).to_owned(),
                    p.count.to_string(),
                    cell(p.min),
                    cell(p.mean),
                    cell(p.p50),
                    cell(p.p95),
                    cell(p.p99),
                    cell(p.max),
                ]
            })
            .collect(),
        status,
        detail: json!({
            "websocket": rows[0].1,
            "deep": rows[1].1,
            "worker_grpc": rows[2].1,
            "worker_errors": deep.bad,
            "status": status,
        }),
    }
}
