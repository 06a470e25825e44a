//! Fuzz target: the binary frame decoder takes any bytes without panicking,
//! and whatever it accepts encodes back to the same bytes. `cargo test`
//! replays `tests/__fuzz__/the_frame_decoder_takes_any_bytes/corpus/` and
//! then tries random inputs for `BOLERO_RANDOM_TEST_TIME_MS` (default 1 s).

use tts_frame::{decode_frame, encode_frame};

#[test]
fn the_frame_decoder_takes_any_bytes() {
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok((header, payload)) = decode_frame(bytes) {
            let mut again = Vec::new();
            encode_frame(&header, payload, &mut again);
            assert_eq!(again, bytes, "decoded {header:?} does not encode back");
        }
    });
}
