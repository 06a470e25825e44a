//! Fuzz target: the client-message parser answers any text with a message
//! or a typed error, never a panic, and every error renders as a message
//! for the client. `cargo test` replays
//! `tests/__fuzz__/the_message_parser_takes_any_text/corpus/` and then
//! tries random inputs for `BOLERO_RANDOM_TEST_TIME_MS` (default 1 s).

use tts_protocol::ServerMessage;

#[test]
fn the_message_parser_takes_any_text() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        if let Err(e) = tts_protocol::Command::parse(&text) {
            assert!(!e.to_string().is_empty());
        }
        // The server's own messages parse from any text without panicking too.
        let _ = ServerMessage::parse(&text);
    });
}
