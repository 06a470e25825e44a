//! Opening a request's stream: a worker chosen by the pool, called, and
//! its first frame awaited; one retry on another worker when the first
//! fails before any audio.

use std::time::Duration;

use tonic::Status;
use tracing::info;
use tts_proto::v1::AudioFrame;

use super::{Ending, RelayContext, grpc, stop_ending};
use crate::frame::Failure;
use crate::metrics;
use crate::pool::{Lease, NoWorker};
use crate::protocol::ErrorCode;
use crate::request::Request;

/// A worker's stream and its first frame.
pub(super) type Opened = (Lease, tonic::Streaming<AudioFrame>, Option<AudioFrame>);

/// What one call to a worker came to.
enum Attempt {
    Opened(Box<tonic::Streaming<AudioFrame>>, Option<AudioFrame>),
    /// The worker (or the way there) failed the request.
    Failed(Ending),
    /// The request was stopped meanwhile.
    Stopped(Ending),
}

/// Calls a worker and waits for the first frame. A worker that fails
/// before it (unreachable, no audio in time, a refusal because it is full)
/// is replaced once by another, after a short jittered pause; once a frame
/// has come, the request stays on its worker, so no audio is repeated.
pub(super) async fn open(ctx: &RelayContext, req: &Request, text: &str) -> Result<Opened, Ending> {
    let stop = &req.stop;
    let voice = req.voice.as_deref().unwrap_or("");
    let mut lease = ctx.pool.pick(voice, None).map_err(no_worker)?;
    let mut retried = false;
    loop {
        let failure = match call(ctx, &lease, req, text).await {
            Attempt::Opened(stream, first) => return Ok((lease, *stream, first)),
            Attempt::Stopped(ending) => return Err(ending),
            Attempt::Failed(failure) => failure,
        };
        let url = lease.worker().url.clone();
        let Some(reason) = settle(lease, &failure) else {
            return Err(failure);
        };
        if retried {
            return Err(failure);
        }
        retried = true;
        let Ok(next) = ctx.pool.pick(voice, Some(&url)) else {
            return Err(failure);
        };
        metrics::retried(reason);
        let pause = retry_pause();
        info!(from = %url, to = %next.worker().url, reason,
            pause_ms = pause.as_millis() as u64, "retrying on another worker before the first frame");
        tokio::select! {
            _ = stop.stopped() => return Err(stop_ending(stop)),
            _ = tokio::time::sleep(pause) => {}
        }
        lease = next;
    }
}

/// One call to the worker of `lease`, up to its first frame.
async fn call(ctx: &RelayContext, lease: &Lease, req: &Request, text: &str) -> Attempt {
    let mut client = lease.worker().client.clone();
    let call = async {
        let mut stream = client
            .synthesize(grpc::synthesize_request(&ctx.pool, req, text))
            .await?
            .into_inner();
        let first = stream.message().await?;
        if let Some(delay) = ctx.faults.link_delay() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Status>((stream, first))
    };
    let stop = &req.stop;
    let opened = tokio::select! {
        _ = stop.stopped() => return Attempt::Stopped(stop_ending(stop)),
        r = tokio::time::timeout(ctx.first_frame_timeout, call) => r,
    };
    match opened {
        Ok(Ok((stream, first))) => Attempt::Opened(Box::new(stream), first),
        Err(_) => Attempt::Failed(Ending::Failed(Failure::new(
            ErrorCode::WorkerUnavailable,
            format!(
                "no audio from the worker within {:?}",
                ctx.first_frame_timeout
            ),
        ))),
        Ok(Err(status)) => Attempt::Failed(grpc::failure(&status)),
    }
}

/// Tells the worker's breaker how the call went; the reason to retry
/// elsewhere, if another worker might do better.
fn settle(lease: Lease, failure: &Ending) -> Option<&'static str> {
    match failure {
        Ending::Failed(Failure {
            code: ErrorCode::WorkerUnavailable,
            ..
        }) => {
            lease.failed();
            Some("worker_unavailable")
        }
        Ending::Refused(_) => {
            lease.succeeded();
            Some("overloaded")
        }
        // The worker answered for the request itself (bad text, an
        // unknown voice): another would answer the same.
        _ => {
            lease.succeeded();
            None
        }
    }
}

/// 10 to 50 ms, so that requests failed by the same event do not all land
/// on the next worker at once.
fn retry_pause() -> Duration {
    let spread = grpc::random_id() % 41;
    Duration::from_millis(10 + spread)
}

fn no_worker(e: NoWorker) -> Ending {
    let code = match e {
        NoWorker::NoVoice(_) => ErrorCode::UnknownVoice,
        NoWorker::Empty | NoWorker::Unavailable(_) => ErrorCode::WorkerUnavailable,
    };
    Ending::Failed(Failure::new(code, e.to_string()))
}
