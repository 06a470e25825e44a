//! Worker-side time to first audio and total compute, one-shot versus
//! streaming inside a clause, for a 5-word, a ~20-word and a ~50-word
//! clause (1 intra-op thread), and streamed with 2 intra-op threads (what a
//! first step gets on an idle machine); then the compute of N streams of
//! the 50-word clause stepped one by one against stepped together (their
//! decoder windows in shared calls, `--decode-batch N`); then eight
//! streams started one step apart, stepped together so that calls change
//! width and batch size as they go, on one session per model part against
//! one session per shape (`--constant-shapes`). Prints tables; asserts
//! nothing.
//!
//!     cargo bench -p tts-worker --bench streaming
//!
//! On a GPU (a build with the `cuda` feature; ONNX Runtime's GPU build):
//!
//!     TTS_BENCH_DEVICE=cuda:0 TTS_BENCH_ORT=.cache/onnxruntime-gpu/libonnxruntime.so \
//!       cargo bench -p tts-worker --features cuda --bench streaming
//!
//! `TTS_BENCH_ONLY=shapes` runs the last table alone; `TTS_BENCH_ONLY=widths`
//! runs only the decoder, at one width call after call against alternating
//! widths (one session, then a session per width); `TTS_BENCH_ONLY=fp16`
//! runs only a table of the FP16 decoder against the FP32 one (compute,
//! and the samples' SNR with the noise scales at 0). `TTS_BENCH_GRAPHS=1`
//! and `TTS_BENCH_TEXT_ON_CPU=1` set `--cuda-graphs` and
//! `--text-part-on-cpu`.

use std::path::Path;
use std::time::{Duration, Instant};

use tts_worker::audio::{Framer, Resampler, snr_db, to_s16};
use tts_worker::engine::{
    ChunkPlan, ClauseState, PiperOptions, PiperSynthesizer, PiperVoice, Synthesizer, Voice,
};
use tts_worker::request::Speech;
use tts_worker::text::Clause;

const RUNS: usize = 10;

const CLAUSES: [(&str, &str); 3] = [
    ("5 words", "The quick brown fox jumps."),
    (
        "20 words",
        "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks his morning coffee.",
    ),
    (
        "50 words",
        "Streaming speech has to start quickly and keep a steady pace without ever stalling even when the sentence is very long and the machine is busy with many other listeners who are all waiting for their own first words to arrive at the same moment from the same small server in the corner of the room.",
    ),
];

/// Time to the first 20 ms frame at 48 kHz, and total time, for one clause.
fn measure(synth: &mut PiperSynthesizer, rate: u32, gain: f32, text: &str) -> (Duration, Duration) {
    let clause = Clause {
        text: text.into(),
        terminator: text.chars().last().filter(|c| ".,;:!?".contains(*c)),
    };
    let mut resampler = Resampler::new(rate, 48_000).expect("resampler");
    let (mut framer, mut frames, mut out) = (Framer::default(), Vec::new(), Vec::new());
    let mut first = None;
    let started = Instant::now();
    synth
        .synthesize(&Speech::default(), &clause, &mut |s: &[f32]| {
            out.clear();
            resampler.process(s, &mut out);
            framer.push(out.iter().map(|&x| to_s16(x, gain)), &mut frames);
            if first.is_none() && !frames.is_empty() {
                first = Some(started.elapsed());
            }
            true
        })
        .expect("synthesis");
    let total = started.elapsed();
    (first.unwrap_or(total), total)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let device = std::env::var("TTS_BENCH_DEVICE").map_or(tts_worker::gpu::Device::Cpu, |d| {
        d.parse().expect("TTS_BENCH_DEVICE: cpu or cuda:N")
    });
    let opts = PiperOptions {
        runtime_library: std::env::var_os("TTS_BENCH_ORT").map_or_else(
            || root.join(".cache/onnxruntime/libonnxruntime.so"),
            std::path::PathBuf::from,
        ),
        intra_threads: 1,
        scales: None,
        streaming: true,
        plan: ChunkPlan::default(),
        wide_threads: 0,
        device,
        cuda_graphs: std::env::var("TTS_BENCH_GRAPHS").is_ok_and(|v| v == "1"),
        text_on_cpu: std::env::var("TTS_BENCH_TEXT_ON_CPU").is_ok_and(|v| v == "1"),
        half_decoder: false,
    };
    println!("device: {device:?}");
    match std::env::var("TTS_BENCH_ONLY").as_deref() {
        Ok("shapes") => return shapes(&root, &opts),
        Ok("fp16") => return fp16(&root, &opts),
        Ok("widths") => return widths(&root, &opts),
        _ => {}
    }
    let voice = load(&root, &opts);
    let (rate, gain) = (voice.info().sample_rate, voice.info().gain);
    let mut one_shot = voice.one_shot().expect("session");
    let mut streamed = voice
        .streamed()
        .expect("sessions")
        .expect("the voice streams");
    let wide_voice = load(
        &root,
        &PiperOptions {
            intra_threads: 2,
            ..opts.clone()
        },
    );
    let mut wide = wide_voice
        .streamed()
        .expect("sessions")
        .expect("the voice streams");
    println!("{RUNS} runs each after one warm-up; medians; 1 intra-op thread");
    println!(
        "{:<10} {:>9} | {:>13} {:>11} | {:>13} {:>11} | {:>13} | {:>17}",
        "clause",
        "audio s",
        "one-shot TTFA",
        "total",
        "streamed TTFA",
        "total",
        "compute ratio",
        "2-thread TTFA"
    );
    for (label, text) in CLAUSES {
        let [(a_first, a_total), (b_first, b_total), (c_first, _)] =
            [&mut one_shot, &mut streamed, &mut wide].map(|synth| {
                measure(synth, rate, gain, text);
                let (firsts, totals) = (0..RUNS).map(|_| measure(synth, rate, gain, text)).unzip();
                (median(firsts), median(totals))
            });
        let audio = audio_seconds(&mut one_shot, rate, text);
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<10} {:>9.2} | {:>13} {:>11} | {:>13} {:>11} | {:>12.2}× | {:>17}",
            label,
            audio,
            ms(a_first),
            ms(a_total),
            ms(b_first),
            ms(b_total),
            b_total.as_secs_f64() / a_total.as_secs_f64(),
            ms(c_first)
        );
    }
    batches(&root, &opts);
    shapes(&root, &opts);
}

/// The bench's voice with these options.
fn load(root: &Path, opts: &PiperOptions) -> PiperVoice {
    PiperVoice::load(
        "en_US-joe-medium",
        &root.join(".cache/voices/en_US-joe-medium.onnx"),
        opts,
    )
    .expect("voice (run scripts/setup.sh)")
}

/// Seconds of audio in `text`.
fn audio_seconds(synth: &mut PiperSynthesizer, rate: u32, text: &str) -> f64 {
    let clause = Clause {
        text: text.into(),
        terminator: Some('.'),
    };
    let mut n = 0usize;
    synth
        .synthesize(&Speech::default(), &clause, &mut |s: &[f32]| {
            n += s.len();
            true
        })
        .expect("synthesis");
    n as f64 / f64::from(rate)
}

/// Compute for `n` streams of the 50-word clause, every stream's next step
/// run one by one or together, until all are done.
fn batches(root: &Path, opts: &PiperOptions) {
    let uniform = load(
        root,
        &PiperOptions {
            plan: ChunkPlan {
                uniform: true,
                ..opts.plan
            },
            ..opts.clone()
        },
    );
    let mut alone = uniform.streamed().expect("sessions").expect("streams");
    let mut together = uniform.streamed().expect("sessions").expect("streams");
    let text = CLAUSES[2].1;
    let clause = Clause {
        text: text.into(),
        terminator: Some('.'),
    };
    let speech = Speech::default();
    let run = |synth: &mut PiperSynthesizer, n: usize, batched: bool| {
        let mut states: Vec<ClauseState> = (0..n)
            .map(|_| ClauseState::Pending(clause.clone()))
            .collect();
        let started = Instant::now();
        while states.iter().any(|s| !s.is_done()) {
            let mut refs: Vec<(&Speech, &mut ClauseState)> = states
                .iter_mut()
                .filter(|s| !s.is_done())
                .map(|s| (&speech, s))
                .collect();
            if batched {
                for r in synth.step_many(&mut refs, &mut |_, _| {}) {
                    r.expect("step");
                }
            } else {
                for (speech, state) in refs {
                    synth.step(speech, state, false, &mut |_| {}).expect("step");
                }
            }
        }
        started.elapsed()
    };
    println!();
    println!("{RUNS} runs each after one warm-up; medians; 50-word clause; 1 intra-op thread");
    println!(
        "{:>7} | {:>13} | {:>13} | {:>7}",
        "streams", "one by one", "together", "ratio"
    );
    for n in [1, 2, 4, 8] {
        run(&mut alone, n, false);
        run(&mut together, n, true);
        let a = median((0..RUNS).map(|_| run(&mut alone, n, false)).collect());
        let b = median((0..RUNS).map(|_| run(&mut together, n, true)).collect());
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:>7} | {:>13} | {:>13} | {:>6.2}×",
            n,
            ms(a),
            ms(b),
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

/// Eight streams of the 20-word clause, each started one step after the
/// last and all stepped together until done (calls of every standard
/// width, batches of 1 to 8), on one session per part that sees every
/// shape against one session per shape: decoder batches padded to 1, 2, 4
/// or 8, phoneme ids and flow blocks padded to their buckets.
fn shapes(root: &Path, opts: &PiperOptions) {
    const STREAMS: usize = 8;
    let plan = |constant_shapes| ChunkPlan {
        uniform: true,
        constant_shapes,
        ..opts.plan
    };
    let voices = [0, STREAMS].map(|constant_shapes| {
        load(
            root,
            &PiperOptions {
                plan: plan(constant_shapes),
                ..opts.clone()
            },
        )
    });
    let clause = Clause {
        text: CLAUSES[1].1.into(),
        terminator: Some('.'),
    };
    let speech = Speech::default();
    let run = |synth: &mut PiperSynthesizer| {
        let mut states: Vec<ClauseState> = Vec::new();
        let (mut calls, started) = (0usize, Instant::now());
        while states.len() < STREAMS || states.iter().any(|s| !s.is_done()) {
            if states.len() < STREAMS {
                states.push(ClauseState::Pending(clause.clone()));
            }
            let mut refs: Vec<(&Speech, &mut ClauseState)> = states
                .iter_mut()
                .filter(|s| !s.is_done())
                .map(|s| (&speech, s))
                .collect();
            for r in synth.step_many(&mut refs, &mut |_, _| {}) {
                r.expect("step");
            }
            calls += 1;
        }
        (started.elapsed(), calls)
    };
    println!();
    println!(
        "{RUNS} runs each after one warm-up; medians; {STREAMS} streams of the 20-word clause started a step apart"
    );
    println!("{:<28} | {:>13} | {:>7}", "sessions", "total", "steps");
    let mut totals = Vec::new();
    for (voice, label) in voices
        .iter()
        .zip(["one per part, every shape", "one per shape, padded"])
    {
        let mut synth = voice.streamed().expect("sessions").expect("streams");
        let (_, steps) = run(&mut synth);
        let total = median((0..RUNS).map(|_| run(&mut synth).0).collect());
        println!(
            "{label:<28} | {:>10.1} ms | {steps:>7}",
            total.as_secs_f64() * 1e3
        );
        totals.push(total);
    }
    println!(
        "per shape / shared: {:.2}×",
        totals[1].as_secs_f64() / totals[0].as_secs_f64()
    );
}

/// Each clause streamed by the FP32 decoder and by the FP16 one, with the
/// noise scales at 0: compute, and the FP16 samples' signal-to-noise
/// ratio against the FP32 ones.
fn fp16(root: &Path, opts: &PiperOptions) {
    let [mut full, mut half] = [false, true].map(|half_decoder| {
        load(
            root,
            &PiperOptions {
                scales: Some([0.0, 1.0, 0.0]),
                half_decoder,
                ..opts.clone()
            },
        )
        .streamed()
        .expect("sessions")
        .expect("streams")
    });
    let samples = |synth: &mut PiperSynthesizer, text: &str| {
        let clause = Clause {
            text: text.into(),
            terminator: Some('.'),
        };
        let mut out = Vec::new();
        let started = Instant::now();
        synth
            .synthesize(&Speech::default(), &clause, &mut |s: &[f32]| {
                out.extend_from_slice(s);
                true
            })
            .expect("synthesis");
        (started.elapsed(), out)
    };
    println!();
    println!("{RUNS} runs each after one warm-up; medians; streamed, 1 intra-op thread");
    println!(
        "{:<10} | {:>11} | {:>11} | {:>6} | {:>8}",
        "clause", "FP32 total", "FP16 total", "ratio", "SNR"
    );
    for (label, text) in CLAUSES {
        let (_, a) = samples(&mut full, text);
        let (_, b) = samples(&mut half, text);
        let [ta, tb] = [&mut full, &mut half]
            .map(|synth| median((0..RUNS).map(|_| samples(synth, text).0).collect()));
        println!(
            "{label:<10} | {:>8.1} ms | {:>8.1} ms | {:>5.2}× | {:>5.1} dB",
            ta.as_secs_f64() * 1e3,
            tb.as_secs_f64() * 1e3,
            tb.as_secs_f64() / ta.as_secs_f64(),
            snr_db(&a, &b)
        );
    }
}

/// The decoder alone: [`CALLS`] calls at one width, then alternating two
/// widths on one session, then alternating on a session per width. A
/// provider that plans for the last shape only (cuDNN in ONNX Runtime's
/// CUDA provider) pays a new plan on every alternating call of the shared
/// session.
fn widths(root: &Path, opts: &PiperOptions) {
    const CALLS: usize = 200;
    /// The bench voice's latent channels.
    const CHANNELS: usize = 192;
    const WIDE: usize = 148;
    const NARROW: usize = 84;
    let voice = load(root, opts);
    let open = || {
        voice
            .decoder_session()
            .expect("session")
            .expect("the voice streams")
    };
    let frames =
        |w: usize| -> Vec<f32> { (0..CHANNELS * w).map(|i| (i as f32 * 0.37).sin()).collect() };
    let inputs = [WIDE, NARROW].map(frames);
    // Mean milliseconds per call at each width, calls taking turns over
    // `plan` (width index, session index).
    let run = |sessions: &mut [(ort::session::Session, String)], plan: &[(usize, usize)]| {
        let mut took = [(Duration::ZERO, 0u32); 2];
        for call in 0..CALLS + plan.len() {
            let (w, s) = plan[call % plan.len()];
            let (session, name) = &mut sessions[s];
            let width = [WIDE, NARROW][w];
            let tensor =
                ort::value::Tensor::from_array(([1usize, CHANNELS, width], inputs[w].clone()))
                    .expect("tensor");
            let started = Instant::now();
            session
                .run(ort::inputs![name.as_str() => tensor])
                .expect("decoder call");
            // The first round builds each session's plans: not counted.
            if call >= plan.len() {
                took[w].0 += started.elapsed();
                took[w].1 += 1;
            }
        }
        took.map(|(d, n)| (n > 0).then(|| d.as_secs_f64() * 1e3 / f64::from(n)))
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
    println!();
    println!("the decoder alone, {CALLS} calls a row, mean per call; 1 intra-op thread");
    println!("{:<40} | {:>10} | {:>10}", "calls", WIDE, NARROW);
    let mut one = [open()];
    let mut two = [open(), open()];
    for (label, result) in [
        (
            format!("{WIDE} frames, call after call"),
            run(&mut one, &[(0, 0)]),
        ),
        (
            format!("{WIDE} and {NARROW} alternating, one session"),
            run(&mut one, &[(0, 0), (1, 0)]),
        ),
        (
            format!("{WIDE} and {NARROW} alternating, a session each"),
            run(&mut two, &[(0, 0), (1, 1)]),
        ),
    ] {
        println!(
            "{label:<40} | {:>10} | {:>10}",
            ms(result[0]),
            ms(result[1])
        );
    }
}
