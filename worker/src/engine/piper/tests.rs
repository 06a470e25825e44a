use std::path::Path;

use super::*;
use crate::engine::phonemes::{BOS, EOS, MAX_IDS};
use crate::engine::stream::{Bound, Shapes};

enum PlanChoice {
    Default,
    /// One window over the whole clause, no context: the three parts in
    /// plain sequence.
    Whole,
    /// No streaming: whole clauses through the whole model.
    NoStreaming,
    /// The default windows, widened to the standard widths.
    Uniform,
    /// Uniform, and a decoder session per shape, batches padded to a
    /// power of two up to 4.
    Shaped,
}

fn voice(plan: PlanChoice) -> PiperVoice {
    voice_with(plan, false)
}

/// The test voice with `plan`, its decoder in FP16 with `half`.
fn voice_with(plan: PlanChoice, half: bool) -> PiperVoice {
    let streaming = !matches!(plan, PlanChoice::NoStreaming);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join(".cache/voices/en_US-joe-medium.onnx");
    let plan = match plan {
        PlanChoice::Default | PlanChoice::NoStreaming => ChunkPlan::default(),
        PlanChoice::Uniform => ChunkPlan {
            uniform: true,
            ..ChunkPlan::default()
        },
        PlanChoice::Shaped => ChunkPlan {
            uniform: true,
            constant_shapes: 4,
            ..ChunkPlan::default()
        },
        PlanChoice::Whole => ChunkPlan {
            first: usize::MAX / 4,
            max: usize::MAX / 4,
            context: 0,
            uniform: false,
            constant_shapes: 0,
        },
    };
    let opts = PiperOptions {
        runtime_library: root.join(".cache/onnxruntime/libonnxruntime.so"),
        intra_threads: 1,
        scales: Some([0.0, 1.0, 0.0]),
        streaming,
        plan,
        wide_threads: 0,
        device: crate::gpu::Device::Cpu,
        cuda_graphs: false,
        text_on_cpu: false,
        half_decoder: half,
    };
    PiperVoice::load("joe", &model, &opts)
        .unwrap_or_else(|e| panic!("the Piper voice is required (run scripts/setup.sh): {e}"))
}

fn clause(text: &str) -> Clause {
    Clause {
        text: text.into(),
        terminator: text.chars().last().filter(|c| ".,;:!?".contains(*c)),
    }
}

/// How a request with word timestamps is spoken.
fn timed() -> Speech {
    Speech {
        timestamps: true,
        ..Speech::default()
    }
}

/// The samples of one clause, and how many pieces they came in.
fn speak(synth: &mut PiperSynthesizer, text: &str) -> (Vec<f32>, usize) {
    let (mut out, mut pieces) = (Vec::new(), 0);
    synth
        .synthesize(&Speech::default(), &clause(text), &mut |s: &[f32]| {
            out.extend_from_slice(s);
            pieces += 1;
            true
        })
        .expect("synthesis");
    (out, pieces)
}

/// The samples of one clause spoken with timestamps, and its words.
fn speak_timed(synth: &mut PiperSynthesizer, text: &str) -> (Vec<f32>, Vec<WordSpan>) {
    let mut out = Vec::new();
    synth
        .synthesize(&timed(), &clause(text), &mut |s: &[f32]| {
            out.extend_from_slice(s);
            true
        })
        .expect("synthesis");
    (out, synth.take_words())
}

#[test]
fn words_are_placed_alike_streamed_or_whole_and_each_holds_speech() {
    let text = "The quick brown fox jumps over the lazy dog, and 123 of the others.";
    let streaming = voice(PlanChoice::Default);
    let whole = voice(PlanChoice::NoStreaming);
    assert!(streaming.info().timestamps && whole.info().timestamps);
    let (audio, words) = speak_timed(&mut streaming.streamed().expect("s").expect("s"), text);
    let (audio_whole, words_whole) = speak_timed(&mut whole.one_shot().expect("s"), text);
    let names: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(
        names,
        [
            "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "123",
            "of", "the", "others"
        ]
    );
    assert_eq!(words, words_whole, "the same durations either way");
    assert_eq!(audio.len(), audio_whole.len());
    let level = |s: &[f32]| s.iter().map(|x| x.abs()).sum::<f32>() / s.len().max(1) as f32;
    for pair in words.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{pair:?}");
    }
    for w in &words {
        assert!(
            w.start < w.end && w.end <= audio.len(),
            "{w:?} in {} samples",
            audio.len()
        );
    }
    // Speech lies inside the words, silence between them: the words'
    // samples are much louder than the rest.
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    let mut at = 0;
    for w in &words {
        outside.extend_from_slice(&audio[at..w.start]);
        inside.extend_from_slice(&audio[w.start..w.end]);
        at = w.end;
    }
    outside.extend_from_slice(&audio[at..]);
    let (inside, outside) = (level(&inside), level(&outside));
    assert!(
        inside > 2.5 * outside,
        "inside words {inside}, outside {outside}"
    );
    let whole_level = level(&audio);
    let loud = words
        .iter()
        .filter(|w| level(&audio[w.start..w.end]) > whole_level * 0.5)
        .count();
    assert!(
        loud >= words.len() - 2,
        "{loud} of {} words hold speech",
        words.len()
    );
    // Without timestamps, nothing is placed.
    let mut synth = streaming.streamed().expect("s").expect("s");
    speak(&mut synth, text);
    assert!(synth.take_words().is_empty());
}

/// The least signal-to-noise ratio of the FP16 decoder's samples against
/// the FP32 decoder's.
const FP16_MIN_SNR_DB: f64 = 40.0;

const SENTENCES: [&str; 4] = [
    "Hello there.",
    "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
    "Streaming speech has to start quickly, keep a steady pace, and never stall, even when \
     the sentence is long, full of commas, and the machine is busy with many other listeners \
     who are all waiting for their own first words to arrive.",
    "Yes!",
];

#[test]
fn phoneme_ids_match_the_reference_implementation() {
    let v = voice(PlanChoice::Default);
    let s1: Vec<i64> = vec![
        1, 0, 41, 0, 59, 0, 3, 0, 23, 0, 35, 0, 120, 0, 74, 0, 23, 0, 3, 0, 15, 0, 88, 0, 120, 0,
        14, 0, 100, 0, 26, 0, 3, 0, 19, 0, 120, 0, 51, 0, 122, 0, 23, 0, 31, 0, 3, 0, 17, 0, 108,
        0, 120, 0, 102, 0, 25, 0, 28, 0, 31, 0, 3, 0, 121, 0, 27, 0, 100, 0, 34, 0, 60, 0, 3, 0,
        41, 0, 59, 0, 3, 0, 24, 0, 120, 0, 18, 0, 74, 0, 38, 0, 21, 0, 3, 0, 17, 0, 120, 0, 51, 0,
        122, 0, 66, 0, 10, 0, 2,
    ];
    let s2: Vec<i64> = vec![
        1, 0, 41, 0, 74, 0, 31, 0, 3, 0, 74, 0, 38, 0, 3, 0, 50, 0, 3, 0, 31, 0, 32, 0, 88, 0, 120,
        0, 21, 0, 122, 0, 25, 0, 74, 0, 44, 0, 3, 0, 31, 0, 28, 0, 120, 0, 21, 0, 122, 0, 32, 0,
        96, 0, 3, 0, 32, 0, 120, 0, 61, 0, 31, 0, 32, 0, 10, 0, 2,
    ];
    let got1 = v
        .phoneme_ids(&clause("The quick brown fox jumps over the lazy dog."))
        .expect("ids");
    assert_eq!(got1, s1);
    let got2 = v
        .phoneme_ids(&clause("This is a streaming speech test."))
        .expect("ids");
    assert_eq!(got2, s2);
}

#[test]
fn a_clause_too_long_for_one_text_part_run_is_cut_between_words() {
    let v = voice(PlanChoice::Default);
    let normal = clause(&"The quick brown fox jumps over the lazy dog and ".repeat(6));
    let runs = v.phonemizer.id_runs(&normal, false).expect("ids");
    assert_eq!(runs.len(), 1, "a 300-character clause is one run");
    let digits = clause(&"7".repeat(300));
    let runs = v.phonemizer.id_runs(&digits, false).expect("ids");
    assert!(runs.len() > 1, "{} runs", runs.len());
    eprintln!(
        "300 digits: runs of {:?} ids",
        runs.iter().map(|r| r.ids.len()).collect::<Vec<_>>()
    );
    let space = v.phonemizer.ids[&' '][0];
    for run in runs.iter().map(|r| &r.ids) {
        assert!(run.len() <= MAX_IDS, "{} ids", run.len());
        assert_eq!(run[0], v.phonemizer.ids[&BOS][0]);
        assert_eq!(run[run.len() - 1], v.phonemizer.ids[&EOS][0]);
        // No run starts inside a word: a word boundary precedes it.
        assert_ne!(run[2], space);
    }
    // Streamed and one-shot both speak every run, the same audio.
    let mut streamed = v.streamed().expect("sessions").expect("streams");
    let mut whole = v.one_shot().expect("session");
    let (a, _) = speak(&mut streamed, &"7".repeat(300));
    let (b, _) = speak(&mut whole, &"7".repeat(300));
    assert!(a.len() > 22_050 * 12, "{} samples", a.len());
    assert_eq!(a.len(), b.len());
}

#[test]
fn the_graph_splits_and_the_voice_streams() {
    let v = voice(PlanChoice::Default);
    assert!(v.info().streaming, "the voice should stream");
    assert!(v.streamed().expect("sessions").is_some());
}

#[test]
fn split_parts_compose_to_the_full_model() {
    let v = voice(PlanChoice::Whole);
    let mut whole = v.one_shot().expect("one-shot session");
    let mut parts = v.streamed().expect("sessions").expect("streams");
    for text in SENTENCES {
        let (a, _) = speak(&mut whole, text);
        let (b, pieces) = speak(&mut parts, text);
        assert_eq!(pieces, 1);
        assert_eq!(a.len(), b.len(), "{text}");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "composed parts, {} samples: max abs difference {worst:e}",
            a.len()
        );
        assert_eq!(
            a, b,
            "{text}: the parts in sequence differ from the whole (max {worst})"
        );
    }
}

#[test]
fn streamed_samples_equal_the_one_shot_samples() {
    let v = voice(PlanChoice::Default);
    let mut whole = v.one_shot().expect("one-shot session");
    let mut streamed = v.streamed().expect("sessions").expect("streams");
    for text in SENTENCES {
        let (a, _) = speak(&mut whole, text);
        let (b, pieces) = speak(&mut streamed, text);
        assert!(pieces >= 2 || a.len() < 20 * 256, "{text}: {pieces} pieces");
        assert_eq!(a.len(), b.len(), "{text}");
        let (worst, at) = a
            .iter()
            .zip(&b)
            .enumerate()
            .map(|(i, (x, y))| ((x - y).abs(), i))
            .fold((0f32, 0), |m, d| if d.0 > m.0 { d } else { m });
        eprintln!(
            "streamed in {pieces} pieces, {} samples: max abs difference {worst:e}",
            a.len()
        );
        assert!(
            worst <= 1e-4,
            "{text}: max abs difference {worst} at sample {at}"
        );
    }
}

#[test]
fn clauses_stepped_together_sound_as_they_do_alone() {
    let shapes = step_together_and_compare(PlanChoice::Uniform);
    assert!(
        shapes.decoder.is_empty() && shapes.ids.is_empty() && shapes.flow.is_empty(),
        "one session per part for every shape: {shapes:?}"
    );
}

#[test]
fn a_session_per_shape_sounds_the_same() {
    // Batches of 1 to 4 windows padded to 1, 2 or 4 rows, each shape on
    // its own session; windows at a clause's edge on the shared one. Phoneme
    // ids and flow blocks padded to their buckets, each on its own session.
    let Shapes { decoder, ids, flow } = step_together_and_compare(PlanChoice::Shaped);
    eprintln!("decoder shapes (width, rows): {decoder:?}; ids {ids:?}; flow {flow:?}");
    assert!(
        !ids.is_empty() && ids.iter().all(|n| n.is_power_of_two()),
        "{ids:?}"
    );
    assert!(flow.len() > 1, "first block and later ones: {flow:?}");
    assert!(flow.iter().all(|w| w % 64 == 0), "{flow:?}");
    let shapes = decoder;
    let widths = ChunkPlan::default().widths();
    assert!(shapes.len() > 1, "{shapes:?}");
    assert!(
        shapes
            .iter()
            .all(|&(w, rows)| widths.contains(&w) && [1, 2, 4].contains(&rows)),
        "{shapes:?}"
    );
    assert!(
        shapes.iter().any(|&(_, rows)| rows > 1),
        "batches were padded: {shapes:?}"
    );
}

#[test]
fn a_bound_session_runs_as_a_plain_one_at_fixed_addresses() {
    // The decoder bound to two rows of 40 latent frames (as a CUDA graph
    // would replay it) against the same part run plainly, on different
    // inputs call after call.
    let v = voice(PlanChoice::Default);
    let parts = v.parts.as_ref().expect("streams");
    let open = || {
        v.builder(1)
            .and_then(|mut b| {
                b.commit_from_memory(&parts.decoder)
                    .map_err(|e| EngineError::Runtime(e.to_string()))
            })
            .expect("decoder session")
    };
    let mut plain = open();
    let (rows, frames) = (2, 40);
    let channels = 192;
    let shape = [rows, channels, frames];
    let mut bound = Bound::open(
        open(),
        crate::gpu::Device::Cpu,
        &[(parts.d.as_str(), shape)],
        false,
    )
    .expect("binds");
    let mut addresses = Vec::new();
    for call in 0..3 {
        let input: Vec<f32> = (0..rows * channels * frames)
            .map(|i| ((i * 7 + call * 13) as f32 * 0.37).sin())
            .collect();
        let outputs = plain
            .run(ort::inputs![parts.d.as_str() => Tensor::from_array((shape, input.clone())).expect("tensor")])
            .expect("plain run");
        let (shape, expected) = outputs[0].try_extract_tensor::<f32>().expect("audio");
        let (bound_shape, got) = bound
            .run(&mut |_, values| {
                values.copy_from_slice(&input);
                Ok(())
            })
            .expect("bound run");
        assert_eq!(&bound_shape[..], &shape[..], "call {call}");
        assert_eq!(got, expected, "call {call}: bound and plain differ");
        addresses.push(bound.addresses());
    }
    assert_eq!(addresses[0].len(), 2, "one input and the output");
    assert!(
        addresses.windows(2).all(|a| a[0] == a[1]),
        "addresses moved: {addresses:?}"
    );
    // A call that cannot fill its input fails, and the next one runs.
    let failed = bound.run(&mut |_, _| Err(EngineError::Runtime("no frames".into())));
    assert!(failed.is_err());
    assert!(
        bound
            .run(&mut |_, values| {
                values.fill(0.0);
                Ok(())
            })
            .is_ok()
    );
}

#[test]
fn an_fp16_decoder_sounds_like_the_fp32_one() {
    let full = voice(PlanChoice::Default);
    let half = voice_with(PlanChoice::Default, true);
    assert_ne!(
        full.info().revision,
        half.info().revision,
        "cached FP32 audio must not be replayed for FP16"
    );
    let mut a = full.streamed().expect("sessions").expect("streams");
    let mut b = half.streamed().expect("sessions").expect("streams");
    for text in SENTENCES {
        let (x, _) = speak(&mut a, text);
        let (y, _) = speak(&mut b, text);
        assert_eq!(x.len(), y.len(), "{text}");
        let snr = crate::audio::snr_db(&x, &y);
        assert!(
            snr.is_finite(),
            "{text}: the FP16 decoder gave the FP32 samples"
        );
        eprintln!(
            "FP16 against FP32 decoder, {} samples: SNR {snr:.1} dB",
            x.len()
        );
        assert!(snr > FP16_MIN_SNR_DB, "{text}: SNR {snr:.1} dB");
    }
}

/// Steps the test sentences together (starting one step apart) with
/// `plan`, checks each against the same clause spoken alone (within 1e-4)
/// and that windows shared calls; returns the shapes of the sessions made
/// per shape that ran.
fn step_together_and_compare(plan: PlanChoice) -> Shapes {
    let alone = voice(PlanChoice::Default);
    let mut solo = alone.streamed().expect("sessions").expect("streams");
    let together = voice(plan);
    let mut batch = together.streamed().expect("sessions").expect("streams");
    // Each clause's first steps start one step apart, so that windows of
    // every width meet windows of other widths.
    // The second clause also asks for word timestamps.
    let timed = 1;
    let speeches: Vec<Speech> = (0..SENTENCES.len())
        .map(|i| {
            if i == timed {
                self::timed()
            } else {
                Speech::default()
            }
        })
        .collect();
    let mut states: Vec<ClauseState> = Vec::new();
    let mut audio: Vec<Vec<f32>> = vec![Vec::new(); SENTENCES.len()];
    let mut words: Vec<WordSpan> = Vec::new();
    let mut steps = 0;
    while states.len() < SENTENCES.len() || states.iter().any(|s| !s.is_done()) {
        if let Some(text) = SENTENCES.get(states.len()) {
            states.push(ClauseState::Pending(clause(text)));
        }
        let mut active: Vec<(usize, &mut ClauseState)> = states
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| !s.is_done())
            .collect();
        let index: Vec<usize> = active.iter().map(|(i, _)| *i).collect();
        let mut refs: Vec<(&Speech, &mut ClauseState)> = active
            .iter_mut()
            .map(|(i, s)| (&speeches[*i], &mut **s))
            .collect();
        let results = batch.step_many(&mut refs, &mut |k, s| {
            audio[index[k]].extend_from_slice(s);
        });
        for (k, r) in results.into_iter().enumerate() {
            let placed = r.expect("each clause steps");
            assert!(
                placed.is_empty() || index[k] == timed,
                "words only where asked"
            );
            words.extend(placed);
        }
        steps += 1;
    }
    let Engine::Streamed(sessions) = &batch.engine else {
        panic!("a streaming synthesiser");
    };
    let calls = sessions.decoder_calls();
    let mut windows = 0;
    for (text, got) in SENTENCES.iter().zip(&audio) {
        let before = match &solo.engine {
            Engine::Streamed(s) => s.decoder_calls(),
            Engine::OneShot(..) => 0,
        };
        let (want, _) = speak(&mut solo, text);
        if let Engine::Streamed(s) = &solo.engine {
            windows += s.decoder_calls() - before;
        }
        assert_eq!(want.len(), got.len(), "{text}");
        let worst = want
            .iter()
            .zip(got)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("{} samples: max abs difference {worst:e}", got.len());
        assert!(worst <= 1e-4, "{text}: max abs difference {worst}");
    }
    let (_, alone_words) = speak_timed(&mut solo, SENTENCES[timed]);
    assert!(!words.is_empty());
    assert_eq!(words, alone_words, "words are placed alike batched or not");
    eprintln!("{windows} windows in {calls} decoder calls over {steps} steps");
    assert!(
        calls < windows,
        "{windows} windows should share calls, took {calls}"
    );
    sessions.shapes()
}

#[test]
fn streamed_frames_match_one_shot_frames_across_window_edges() {
    use crate::audio::{Framer, Resampler, to_s16};
    let v = voice(PlanChoice::Default);
    let frames = |synth: &mut PiperSynthesizer, text: &str| {
        let mut resampler =
            Resampler::new(v.info().sample_rate, tts_frame::SAMPLE_RATE).expect("resampler");
        let (mut framer, mut frames, mut out) = (Framer::default(), Vec::new(), Vec::new());
        synth
            .synthesize(&Speech::default(), &clause(text), &mut |s: &[f32]| {
                out.clear();
                resampler.process(s, &mut out);
                framer.push(out.iter().map(|&x| to_s16(x, PIPER_GAIN)), &mut frames);
                true
            })
            .expect("synthesis");
        out.clear();
        resampler.finish(&mut out);
        framer.push(out.iter().map(|&x| to_s16(x, PIPER_GAIN)), &mut frames);
        frames.extend(framer.finish());
        frames
    };
    let mut whole = v.one_shot().expect("one-shot session");
    let mut streamed = v.streamed().expect("sessions").expect("streams");
    let text = SENTENCES[2];
    let (a, b) = (frames(&mut whole, text), frames(&mut streamed, text));
    assert_eq!(a.len(), b.len());
    for (fa, fb) in a.iter().zip(&b) {
        assert_eq!(
            (fa.sequence, fa.samples, fa.last),
            (fb.sequence, fb.samples, fb.last)
        );
        let worst = tts_frame::bytes_to_samples(&fa.payload)
            .zip(tts_frame::bytes_to_samples(&fb.payload))
            .map(|(x, y)| (i32::from(x) - i32::from(y)).abs())
            .max()
            .unwrap_or(0);
        assert!(
            worst <= 2,
            "frame {}: samples differ by {worst} LSB",
            fa.sequence
        );
    }
}

#[test]
fn a_graph_without_the_structure_falls_back_to_one_shot() {
    use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, ValueInfoProto};
    let dir = std::env::temp_dir().join(format!("tts-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut node = NodeProto::new();
    node.op_type = "Identity".into();
    node.input = vec!["scales".into()];
    node.output = vec!["output".into()];
    let mut graph = GraphProto::new();
    graph.node = vec![node];
    let mut input = ValueInfoProto::new();
    input.name = "scales".into();
    graph.input.push(input);
    let mut out = ValueInfoProto::new();
    out.name = "output".into();
    graph.output.push(out);
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.graph = protobuf::MessageField::some(graph);
    let path = dir.join("plain.onnx");
    std::fs::write(&path, model.write_to_bytes().expect("encode")).expect("write");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(
        root.join(".cache/voices/en_US-joe-medium.onnx.json"),
        dir.join("plain.onnx.json"),
    )
    .expect("config");
    let opts = PiperOptions {
        runtime_library: root.join(".cache/onnxruntime/libonnxruntime.so"),
        intra_threads: 1,
        scales: None,
        streaming: true,
        plan: ChunkPlan::default(),
        wide_threads: 0,
        device: crate::gpu::Device::Cpu,
        cuda_graphs: false,
        text_on_cpu: false,
        half_decoder: false,
    };
    let v = PiperVoice::load("plain", &path, &opts).expect("loads");
    assert!(!v.info().streaming);
    assert!(v.streamed().expect("no error").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synthesizes_deterministic_speech() {
    let v = voice(PlanChoice::Default);
    let mut synth = v.one_shot().expect("session");
    let (a, _) = speak(&mut synth, "Hello there, world.");
    let seconds = a.len() as f32 / v.info().sample_rate as f32;
    assert!((0.6..3.0).contains(&seconds), "{seconds} s");
    let peak = a.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.05 && peak < 1.0, "peak {peak}");
    let (b, _) = speak(&mut synth, "Hello there, world.");
    assert_eq!(a, b, "scales [0, 1, 0] are deterministic");
}

#[test]
fn missing_model_names_the_setup_script() {
    let opts = PiperOptions {
        runtime_library: PathBuf::from("/nonexistent/libonnxruntime.so"),
        intra_threads: 1,
        scales: None,
        streaming: true,
        plan: ChunkPlan::default(),
        wide_threads: 0,
        device: crate::gpu::Device::Cpu,
        cuda_graphs: false,
        text_on_cpu: false,
        half_decoder: false,
    };
    let err = PiperVoice::load("x", Path::new("/nonexistent/voice.onnx"), &opts)
        .err()
        .expect("missing model");
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}
