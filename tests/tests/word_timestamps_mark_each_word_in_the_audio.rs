//! Word timestamps: with `timestamps: true` the server sends `words`
//! messages that name every word of the text in order, each before the
//! frame in which it starts, and each placed where its speech is in the
//! audio the client received; at any sample rate, for a request and for a
//! context whose clauses are joined; refused with a code by a voice that
//! cannot give them, and never sent unasked.

use std::time::Instant;

use serde_json::json;
use tts_client::{
    Client, ClientError, Collector, ErrorCode, Event, ServerMessage, SynthesizeOptions, Utterance,
};
use tts_protocol::{Encoding, WordTiming};
use tts_tests::spawn_pipeline;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. This is a streaming speech test.";
const WORDS: [&str; 15] = [
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "This",
    "is",
    "a",
    "streaming",
    "speech",
    "test",
];

fn timed() -> SynthesizeOptions {
    SynthesizeOptions {
        timestamps: true,
        ..SynthesizeOptions::default()
    }
}

/// Mean absolute level of `samples` (at `rate`) between two times, ms.
fn level(samples: &[i16], rate: u32, from_ms: u32, to_ms: u32) -> (f64, usize) {
    let at = |ms: u32| ((u64::from(ms) * u64::from(rate) / 1000) as usize).min(samples.len());
    let span = &samples[at(from_ms)..at(to_ms)];
    let sum: f64 = span.iter().map(|s| f64::from(s.unsigned_abs())).sum();
    (sum, span.len())
}

/// Checks that `words` are `expected`, in order, not overlapping, inside
/// the audio, none late, and that speech lies inside them: the words'
/// samples are much louder than the samples between them.
fn assert_placed(u: &Utterance, expected: &[&str]) {
    let r = &u.report;
    assert_eq!(r.integrity_failures(), 0, "{r:?}");
    let names: Vec<&str> = r.words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(r.late_words, 0, "every word came before its frame");
    let audio_ms = (u.samples.len() as u64 * 1000 / u64::from(u.sample_rate)) as u32;
    for w in &r.words {
        assert!(
            w.start_ms < w.end_ms && w.end_ms <= audio_ms,
            "{w:?} in {audio_ms} ms"
        );
    }
    for pair in r.words.windows(2) {
        assert!(pair[0].end_ms <= pair[1].start_ms, "{pair:?}");
    }
    let (mut inside, mut outside) = ((0.0, 0), (0.0, 0));
    let mut at = 0;
    for w in &r.words {
        let gap = level(&u.samples, u.sample_rate, at, w.start_ms);
        let word = level(&u.samples, u.sample_rate, w.start_ms, w.end_ms);
        outside = (outside.0 + gap.0, outside.1 + gap.1);
        inside = (inside.0 + word.0, inside.1 + word.1);
        at = w.end_ms;
    }
    let tail = level(&u.samples, u.sample_rate, at, audio_ms);
    outside = (outside.0 + tail.0, outside.1 + tail.1);
    let (inside, outside) = (
        inside.0 / inside.1 as f64,
        outside.0 / outside.1.max(1) as f64,
    );
    assert!(
        inside > 2.5 * outside,
        "speech inside words {inside:.0}, between them {outside:.0}"
    );
}

fn within_ms(a: &[WordTiming], b: &[WordTiming], ms: u32) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.word == y.word
                && x.start_ms.abs_diff(y.start_ms) <= ms
                && x.end_ms.abs_diff(y.end_ms) <= ms
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_timestamps_mark_each_word_in_the_audio() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");

    // The voice says it can.
    client
        .send_json(&json!({"type": "voices"}))
        .await
        .expect("send");
    let voices = loop {
        if let Event::Message(ServerMessage::Voices { voices, .. }) =
            client.next_event().await.expect("voices")
        {
            break voices;
        }
    };
    let joe = voices
        .iter()
        .find(|v| v.engine == "piper")
        .expect("a Piper voice");
    assert!(joe.timestamps, "{joe:?}");
    assert!(
        voices
            .iter()
            .filter(|v| v.engine == "espeak")
            .all(|v| !v.timestamps)
    );

    // One request, two sentences: every word, in order, where its speech is.
    let u = client.synthesize(TEXT, &timed()).await.expect("spoken");
    assert_placed(&u, &WORDS);
    let sentence_gap = u.report.words[9].start_ms - u.report.words[8].end_ms;
    assert!(
        sentence_gap >= 100,
        "the pause between sentences: {sentence_gap} ms"
    );

    // Timed in milliseconds of audio, whatever the rate and encoding.
    let phone = SynthesizeOptions {
        encoding: Some(Encoding::Mulaw),
        ..timed()
    };
    let u8k = client
        .synthesize(TEXT, &phone)
        .await
        .expect("spoken at 8 kHz");
    assert_eq!(u8k.sample_rate, 8_000);
    assert_placed(&u8k, &WORDS);
    assert!(
        within_ms(&u.report.words, &u8k.report.words, 1),
        "{:?}\n{:?}",
        u.report.words,
        u8k.report.words
    );

    // Twice as fast: every time about halves.
    let fast = SynthesizeOptions {
        speed: Some(2.0),
        ..timed()
    };
    let u2 = client.synthesize(TEXT, &fast).await.expect("spoken fast");
    assert_placed(&u2, &WORDS);
    let (slow_end, fast_end) = (u.report.words[14].end_ms, u2.report.words[14].end_ms);
    assert!(
        (0.4..0.62).contains(&(f64::from(fast_end) / f64::from(slow_end))),
        "last word ends at {fast_end} ms at speed 2, {slow_end} ms at 1"
    );

    // A context: clauses spoken one after another (one cut by a flush,
    // which pads its last frame) keep one timeline.
    let sent = Instant::now();
    let id = client.open_context(&timed()).await.expect("open");
    for piece in ["The quick brown", " fox jumps over"] {
        client.append(&id, piece).await.expect("append");
    }
    client
        .send_json(&json!({"type": "flush", "request_id": id}))
        .await
        .expect("flush");
    client
        .append(&id, " the lazy dog. This is a streaming speech test.")
        .await
        .expect("append");
    client.close_context(&id).await.expect("close");
    let c = client
        .collect(Collector::new(id.clone(), sent))
        .await
        .expect("context spoken");
    assert_placed(&c, &WORDS);

    // Unasked, nothing is sent.
    let plain = client
        .synthesize("Hello there.", &SynthesizeOptions::default())
        .await
        .expect("spoken");
    assert!(plain.report.words.is_empty());

    // A voice without timestamps refuses them with a code; the connection
    // goes on serving.
    let espeak = SynthesizeOptions {
        voice: Some("espeak-en-us".into()),
        ..timed()
    };
    match client.synthesize("Hello there.", &espeak).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("timestamps"), "{message}");
        }
        other => panic!("espeak with timestamps: {other:?}"),
    }
    let again = client
        .synthesize("Still here.", &timed())
        .await
        .expect("spoken");
    assert_placed(&again, &["Still", "here"]);

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
