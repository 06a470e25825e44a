//! The per-frame hot path: what every hop does to each 20 ms frame.
//!
//!     cargo bench -p tts-frame

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tts_frame::{
    FrameHeader, PAYLOAD_BYTES, Validator, analyse, checksum, decode_frame, encode_frame,
};

fn payload() -> Vec<u8> {
    (0..PAYLOAD_BYTES)
        .map(|i| ((i * 7919) % 251) as u8)
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let payload = payload();
    let mut wire = Vec::with_capacity(FrameHeader::LEN + PAYLOAD_BYTES);
    c.bench_function("crc32c of one payload (1920 bytes)", |b| {
        b.iter(|| checksum(black_box(&payload)))
    });
    c.bench_function("analyse one payload (level, peak, clipping, DC)", |b| {
        b.iter(|| analyse(black_box(&payload)))
    });
    let mut sequence = 0u32;
    let mut validator = Validator::new();
    c.bench_function("encode + crc32c + validate + decode, per frame", |b| {
        b.iter(|| {
            let header = FrameHeader {
                stream_id: 1,
                sequence,
                crc32c: checksum(&payload),
                last: false,
                worker_ts_us: 1,
                orchestrator_ts_us: 2,
            };
            encode_frame(&header, black_box(&payload), &mut wire);
            let (h, p) = decode_frame(black_box(&wire)).expect("valid frame");
            let stats = validator.check(h.sequence, h.crc32c, p).expect("valid");
            sequence += 1;
            black_box(stats)
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
