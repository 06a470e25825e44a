//! The ping side channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tts_client::Client;

use super::{RunConfig, Sample};

/// The ping side channel: its own connection, one ping per interval.
pub(super) async fn ping_loop(
    config: Arc<RunConfig>,
    tx: mpsc::Sender<Sample>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut client) = Client::connect(&config.url).await else {
        return;
    };
    client.timeout = Duration::from_secs(5);
    let mut id = 0u64;
    let mut tick = tokio::time::interval(config.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        id += 1;
        match client.ping(id).await {
            Ok(rtt) => {
                if tx.send(Sample::Rtt(rtt)).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
