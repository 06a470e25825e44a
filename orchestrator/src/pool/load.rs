//! What each worker says of its load (`GetLoad`, polled every
//! `--worker-poll-ms`, and its voices, listed once), and the score routing
//! derives from it.

use std::sync::Arc;
use std::time::Duration;

use tts_proto::v1::{ListVoicesRequest, LoadRequest};

use super::{Pool, State, Worker};
use crate::metrics;

/// How long a load poll may take before the worker counts as not serving.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Assumed share of a worker's threads one stream needs, until the worker
/// has reported a stream of its own.
const DEFAULT_STREAM_COST: f64 = 0.1;

/// The last `GetLoad` answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub(super) streams: u32,
    pub(super) utilisation: f64,
}

impl State {
    /// Its load as routing sees it (lower is better).
    pub(super) fn score(&self) -> f64 {
        let state = self;
        match state.load {
            Some(load) => {
                let per_stream = if load.streams > 0 {
                    load.utilisation / f64::from(load.streams)
                } else {
                    DEFAULT_STREAM_COST
                };
                load.utilisation + f64::from(state.started_since_report) * per_stream
            }
            None => f64::from(state.inflight) * DEFAULT_STREAM_COST,
        }
    }
}

impl Pool {
    /// Polls every worker's load every `poll` (and lists its voices once)
    /// until `stop`.
    pub(crate) async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let polls = self.all().into_iter().map(|w| self.poll(w));
            futures::future::join_all(polls).await;
            let serving = self
                .all()
                .iter()
                .filter(|w| w.state().serving == Some(true))
                .count();
            metrics::workers_serving(serving);
        }
    }

    /// Asks one worker for its load now (a worker just registered).
    pub(crate) async fn poll_now(&self, url: &str) {
        if let Some(worker) = self.find(url) {
            self.poll(worker).await;
        }
    }

    async fn poll(&self, worker: Arc<Worker>) {
        let mut client = worker.client.clone();
        let request = self.request(LoadRequest {});
        let answer = tokio::time::timeout(POLL_TIMEOUT, client.get_load(request)).await;
        let needs_voices = worker.state().voices.is_none();
        let serving = {
            let mut state = worker.state();
            match answer {
                Ok(Ok(report)) => {
                    let report = report.into_inner();
                    state.serving = Some(report.serving);
                    state.problem = (!report.serving).then(|| "not serving".to_owned());
                    state.load = Some(Load {
                        streams: report.streams,
                        utilisation: report.utilisation,
                    });
                    state.started_since_report = 0;
                    state.faults = report.faults;
                    metrics::worker_load(&worker.url, report.utilisation);
                }
                Ok(Err(status)) => {
                    state.serving = Some(false);
                    state.problem = Some(status.message().to_owned());
                }
                Err(_) => {
                    state.serving = Some(false);
                    state.problem = Some(format!("no load report within {POLL_TIMEOUT:?}"));
                }
            }
            state.serving == Some(true)
        };
        if serving && needs_voices {
            let r = self.request(ListVoicesRequest {});
            if let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_secs(2), client.list_voices(r)).await
            {
                let list = list.into_inner();
                let voices = list.voices.into_iter().map(|v| (v.name, v.revision));
                let mut state = worker.state();
                state.voices = Some(voices.collect());
                state.default_voice = Some(list.default_voice);
            }
        }
    }
}
