//! A context's pieces (`append`, `flush`, `close`), handed to the
//! context's task or refused with a coded error each.

use tokio::sync::mpsc;

use super::Connection;
use crate::admission::shortened;
use crate::context::Piece;
use crate::metrics;
use crate::protocol::{ErrorCode, ServerMessage};

impl Connection<'_> {
    /// Hands a piece to its context; refusals are coded errors and leave
    /// the context as it was.
    pub(super) async fn feed(&mut self, request_id: String, piece: Piece) {
        if let Err((code, message)) = self.try_feed(&request_id, piece) {
            metrics::request_finished(code.outcome(), Some(code));
            let err = ServerMessage::error(code, message, Some(shortened(&request_id).to_owned()));
            self.control(err).await;
        }
    }

    /// Hands a piece on, or says why not (in this order): no such
    /// context, not a context, the context's text too long, the
    /// connection's characters, too many pieces waiting, closed.
    fn try_feed(&mut self, request_id: &str, piece: Piece) -> Result<(), (ErrorCode, String)> {
        let max_chars = self.shared.config.max_text_chars;
        let added = match &piece {
            Piece::Text(t) => t.chars().count(),
            _ => 0,
        };
        let Some(active) = self.active.get_mut(request_id) else {
            let message = format!("no context {request_id:?} is open");
            return Err((ErrorCode::BadRequest, message));
        };
        let Some(feed) = &active.feed else {
            let message = format!("request {request_id:?} is not a context");
            return Err((ErrorCode::BadRequest, message));
        };
        if active.chars + added > max_chars {
            let message = format!("the context's text would be over {max_chars} characters");
            return Err((ErrorCode::TextTooLong, message));
        }
        let Some(more) = self.budget.take_chars(added) else {
            let inflight = self.budget.chars_in_flight();
            let message = format!("{inflight} characters in flight on this connection");
            return Err((ErrorCode::RateLimited, message));
        };
        match feed.try_send(piece) {
            Ok(()) => {
                active.chars += added;
                match &mut active.text {
                    Some(text) => text.merge(more),
                    None => active.text = Some(more),
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err((
                ErrorCode::RateLimited,
                "too many pieces waiting in this context".to_owned(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err((
                ErrorCode::BadRequest,
                format!("context {request_id:?} is closed"),
            )),
        }
    }
}
