//! The worker's per-frame audio path: resampling 22,050 → 48,000 Hz and
//! limiting + framing, per 20 ms frame.
//!
//!     cargo bench -p tts-worker --bench resample

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tts_worker::audio::{Framer, Resampler, to_s16};

fn per_frame(c: &mut Criterion) {
    // 20 ms at 22,050 Hz is 441 samples, which become 960 at 48 kHz.
    let input: Vec<f32> = (0..441).map(|i| (i as f32 * 0.05).sin() * 0.4).collect();
    let mut resampler = Resampler::new(22_050, 48_000).expect("resampler");
    let mut out = Vec::with_capacity(2048);
    c.bench_function("resample 20 ms (441 → 960 samples)", |b| {
        b.iter(|| {
            out.clear();
            resampler.process(black_box(&input), &mut out);
            black_box(out.len())
        })
    });
    let samples: Vec<f32> = (0..960).map(|i| (i as f32 * 0.02).sin() * 0.5).collect();
    let mut framer = Framer::default();
    let mut frames = Vec::with_capacity(4);
    c.bench_function("limit + convert + frame (with crc32c) 960 samples", |b| {
        b.iter(|| {
            frames.clear();
            framer.push(samples.iter().map(|&s| to_s16(s, 2.0)), &mut frames);
            black_box(frames.len())
        })
    });
}

criterion_group!(benches, per_frame);
criterion_main!(benches);
