//! The synthesis canary of `/ready?deep=1`: a short phrase spoken by a
//! worker and its audio checked, with the result reused for a while.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tts_frame::{Tally, Validator};
use tts_proto::v1::tts_client::TtsClient;

use super::AdminState;
use super::checks::check;
use crate::protocol::admin::{Check, CheckStatus};
use crate::relay::grpc::canary_request;

/// The phrase the canary speaks.
const CANARY_TEXT: &str = "Canary check.";
/// Frames a good canary produces: "Canary check." is about one second.
const CANARY_FRAMES: std::ops::RangeInclusive<u64> = 15..=250;

/// The canary's last result while fresh; a new run otherwise. Concurrent
/// callers share one run.
pub(super) async fn cached(state: &AdminState) -> Check {
    let max_age = Duration::from_secs_f64(state.config.canary_cache_secs);
    let mut cache = state.canary.lock().await;
    if let Some((at, check)) = cache.as_ref()
        && at.elapsed() < max_age
    {
        return check.clone();
    }
    let result = match state.pool.any() {
        Ok(worker) => canary(&worker.client, state.config.worker_auth_token.as_deref()).await,
        Err(e) => check(CheckStatus::Fail, Instant::now(), e.to_string()),
    };
    *cache = Some((Instant::now(), result.clone()));
    result
}

/// Speaks [`CANARY_TEXT`] through the worker and checks the audio: frame
/// count in range, sizes, sequence and checksums valid, not silent, not
/// clipped.
async fn canary(client: &TtsClient<Channel>, token: Option<&str>) -> Check {
    let started = Instant::now();
    let request = canary_request(CANARY_TEXT, crate::security::bearer(token));
    let mut client = client.clone();
    let run = async {
        let mut stream = client.synthesize(request).await?.into_inner();
        let (mut validator, mut tally, mut last) = (Validator::new(), Tally::default(), false);
        while let Some(frame) = stream.message().await? {
            tally.record(&validator.check(frame.sequence, frame.crc32c, &frame.payload));
            last |= frame.last;
        }
        Ok::<_, tonic::Status>((tally, last))
    };
    let fail = CheckStatus::Fail;
    let (tally, last) = match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(result)) => result,
        Ok(Err(status)) => {
            let detail = format!("synthesis failed: {}", status.message());
            return check(fail, started, detail);
        }
        Err(_) => return check(fail, started, "no complete answer within 10 s"),
    };
    match problem(&tally, last) {
        Some(p) => check(fail, started, p),
        None => {
            let frames = tally.ok + tally.errors();
            let detail = format!("{frames} frames, {} silent, checksums valid", tally.silence);
            check(CheckStatus::Ok, started, detail)
        }
    }
}

/// What is wrong with the canary's audio, if anything.
fn problem(tally: &Tally, last: bool) -> Option<String> {
    let frames = tally.ok + tally.errors();
    if tally.errors() > 0 {
        Some(format!("{} frames failed verification", tally.errors()))
    } else if !CANARY_FRAMES.contains(&frames) || !last {
        Some(format!(
            "{frames} frames (expected {CANARY_FRAMES:?}, last flag {last})"
        ))
    } else if tally.silence == frames {
        Some("every frame is silent".to_owned())
    } else if tally.quality_events() > 0 {
        Some(format!(
            "quality events: {} clipping, {} DC offset, {} dead air, {} leading silence",
            tally.clipping, tally.dc_offset, tally.dead_air, tally.leading_silence
        ))
    } else {
        None
    }
}
