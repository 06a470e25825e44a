//! `doctor rtt`: WebSocket ping round trips, and deep pings that also make a
//! gRPC round trip to the worker.

use std::time::Instant;

use serde_json::json;

use super::{Findings, Percentiles, Status};
use crate::{Client, ClientError, Event, ServerMessage};

/// Sends `count` pings, then `count` deep pings, one at a time.
pub async fn run(url: &str, count: u32) -> Result<Findings, ClientError> {
    let mut client = Client::connect(url).await?;
    let mut ws = Vec::new();
    for id in 0..count {
        ws.push(client.ping(u64::from(id)).await?.as_secs_f64() * 1e3);
    }
    let (mut deep, mut worker, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for id in 0..count {
        let sent = Instant::now();
        let id = format!("deep-{id}");
        client
            .send_json(&json!({"type": "ping", "id": id, "deep": true}))
            .await?;
        let (rtt_us, status) = loop {
            if let Event::Message(ServerMessage::Pong {
                id: got,
                worker_rtt_us,
                worker_status,
                ..
            }) = client.next_event().await?
                && got == id.as_str()
            {
                break (worker_rtt_us, worker_status);
            }
        };
        deep.push(sent.elapsed().as_secs_f64() * 1e3);
        worker.push(rtt_us.unwrap_or(0) as f64 / 1e3);
        let status = status.unwrap_or_else(|| "missing".to_owned());
        if status != "SERVING" {
            bad.push(status);
        }
    }
    let rows = [
        ("websocket ping", Percentiles::of(&ws)),
        ("deep ping (client → worker)", Percentiles::of(&deep)),
        (
            "  of which orchestrator → worker gRPC",
            Percentiles::of(&worker),
        ),
    ];
    let status = if !bad.is_empty() {
        Status::Fail
    } else {
        Status::Ok
    };
    let cell = |v: f64| format!("{v:.3}");
    Ok(Findings {
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
            "worker_errors": bad,
            "status": status,
        }),
    })
}
