//! The worker's voices, as the WebSocket `voices` message and
//! `GET /v1/voices` list them.

use std::time::Duration;

use tts_proto::v1::ListVoicesRequest;

use crate::protocol::{ErrorCode, ServerMessage, VoiceEntry};
use crate::relay::RelayContext;

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

/// What `voices` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct VoiceList {
    pub(crate) default_voice: String,
    pub(crate) voices: Vec<VoiceEntry>,
}

impl VoiceList {
    pub(crate) fn into_message(self) -> ServerMessage {
        ServerMessage::Voices {
            default_voice: self.default_voice,
            voices: self.voices,
        }
    }
}

/// Asks the worker (one `ListVoices`, bounded in time).
pub(crate) async fn list(ctx: &RelayContext) -> Result<VoiceList, VoicesError> {
    let mut client = ctx.client.clone();
    let mut request = tonic::Request::new(ListVoicesRequest {});
    if let Some(auth) = &ctx.worker_auth {
        request.metadata_mut().insert("authorization", auth.clone());
    }
    let answer = tokio::time::timeout(LIST_TIMEOUT, client.list_voices(request))
        .await
        .map_err(|_| VoicesError(format!("no answer within {LIST_TIMEOUT:?}")))?
        .map_err(|s| VoicesError(s.message().to_owned()))?
        .into_inner();
    Ok(VoiceList {
        default_voice: answer.default_voice,
        voices: answer
            .voices
            .into_iter()
            .map(|v| VoiceEntry {
                name: v.name,
                engine: v.engine,
                language: v.language,
                native_sample_rate: v.native_sample_rate,
                streaming: v.streaming,
            })
            .collect(),
    })
}
