//! The worker's voices, as the WebSocket `voices` message and
//! `GET /v1/voices` list them.

use std::time::Duration;

use tts_proto::v1::ListVoicesRequest;

use crate::pool::Pool;
use crate::protocol::http::VoiceList;
use crate::protocol::{ErrorCode, ServerMessage};
use crate::relay::grpc::voice_entry;

/// How long the worker may take to list its voices.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// The worker could not say.
#[derive(Debug, thiserror::Error)]
#[error("the worker did not list its voices: {0}")]
pub(crate) struct VoicesError(String);

impl VoicesError {
    /// The code a client gets.
    pub(crate) fn code(&self) -> ErrorCode {
        ErrorCode::WorkerUnavailable
    }
}

/// What `voices` answers, as a WebSocket message.
pub(crate) fn message(list: VoiceList) -> ServerMessage {
    ServerMessage::Voices {
        default_voice: list.default_voice,
        voices: list.voices,
    }
}

/// Asks every worker (one `ListVoices` each, at once, bounded in time)
/// and lists each voice once; the default is the first worker's.
pub(crate) async fn list(pool: &Pool) -> Result<VoiceList, VoicesError> {
    let workers = pool.all();
    let asks = workers.iter().map(|w| async move {
        let mut client = w.client.clone();
        let request = pool.request(ListVoicesRequest {});
        tokio::time::timeout(LIST_TIMEOUT, client.list_voices(request))
            .await
            .map_err(|_| VoicesError(format!("{}: no answer within {LIST_TIMEOUT:?}", w.url)))?
            .map_err(|s| VoicesError(format!("{}: {}", w.url, s.message())))
            .map(tonic::Response::into_inner)
    });
    let mut first_error = None;
    let mut answer: Option<tts_proto::v1::ListVoicesResponse> = None;
    for a in futures::future::join_all(asks).await {
        match (a, answer.as_mut()) {
            (Ok(a), None) => answer = Some(a),
            (Ok(a), Some(all)) => {
                for v in a.voices {
                    if !all.voices.iter().any(|known| known.name == v.name) {
                        all.voices.push(v);
                    }
                }
            }
            (Err(e), _) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let answer = match (answer, first_error) {
        (Some(a), _) => a,
        (None, Some(e)) => return Err(e),
        (None, None) => return Err(VoicesError("no worker is configured or registered".into())),
    };
    Ok(VoiceList {
        default_voice: answer.default_voice,
        voices: answer.voices.into_iter().map(voice_entry).collect(),
    })
}
