//! Batched decoding (`--decode-batch`): one synthesis thread runs the
//! decoder windows of several streams as one call, each padded to a common
//! width. Four requests at once through a worker that batches and one that
//! does not (both deterministic, real processes, real WebSocket clients):
//!
//! - every stream arrives verified and sounds the same either way (within
//!   2 LSB: padding changes the order of floating-point sums, not the
//!   audio);
//! - the batching worker's `tts_worker_decoder_batch_size` shows calls with
//!   more than one window and `tts_worker_first_step_seconds{batched}`
//!   splits first steps by whether they were batched; the other worker's
//!   calls all hold one window.

use std::net::SocketAddr;
use std::time::Duration;

use tts_client::{Client, SynthesizeOptions, Utterance};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{ServiceProcess, assert_speech_like, http_get, sample, spawn_orchestrator};

const TEXTS: [&str; 4] = [
    "The rain in Spain stays mainly in the plain.",
    "A journey of a thousand miles begins with a single step.",
    "Time flies like an arrow, and fruit flies like a banana.",
    "All that glitters is not gold.",
];

/// Speaks every text at once through `worker`; returns each utterance.
async fn speak_all(worker: &ServiceProcess) -> Vec<Utterance> {
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    let mut tasks = Vec::new();
    for text in TEXTS {
        let url = pipeline.ws_url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await.expect("connect");
            client.timeout = Duration::from_secs(60);
            client
                .synthesize(text, &SynthesizeOptions::default())
                .await
                .expect("synthesize")
        }));
    }
    let mut out = Vec::new();
    for (task, text) in tasks.into_iter().zip(TEXTS) {
        let u = task.await.expect("task");
        assert_eq!(u.report.integrity_failures(), 0, "{text}: {:?}", u.report);
        assert_eq!(u.report.frames, u.report.end_frames, "{text}");
        assert!(u.report.last_flag_seen, "{text}");
        assert_speech_like(&u.samples, text.split_whitespace().count());
        out.push(u);
    }
    pipeline.orchestrator.stop().await;
    out
}

async fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_decoded_together_sound_as_they_do_alone() {
    // One synthesis thread: four streams' steps queue up behind each other,
    // and their first steps all fall due within the horizon. Admission is
    // off: the four arrive at once, more than one thread keeps in real time
    // (a debug build's cost), and what is compared here is their audio.
    let common = [
        "--deterministic",
        "--synthesis-threads",
        "1",
        "--idle-intra-threads",
        "0",
        "--admission",
        "false",
    ];
    let batching = ServiceProcess::worker(&[&common[..], &["--decode-batch", "4"]].concat()).await;
    let together = speak_all(&batching).await;
    let m = metrics(batching.admin).await;
    drop(batching);

    let plain = ServiceProcess::worker(&common).await;
    let alone = speak_all(&plain).await;
    let p = metrics(plain.admin).await;
    drop(plain);

    for ((text, a), b) in TEXTS.iter().zip(&alone).zip(&together) {
        assert_eq!(a.samples.len(), b.samples.len(), "{text}");
        let worst = a
            .samples
            .iter()
            .zip(&b.samples)
            .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
            .max()
            .unwrap_or(0);
        eprintln!("{text}: {} samples, worst {worst} LSB", a.samples.len());
        assert!(worst <= 2, "{text}: batched audio differs by {worst} LSB");
    }

    let calls = sample(&m, "tts_worker_decoder_batch_size_count");
    let single = sample(&m, "tts_worker_decoder_batch_size_bucket{le=\"1\"}");
    let batched_first = sample(&m, "tts_worker_first_step_seconds_count{batched=\"true\"}");
    let alone_first = sample(&m, "tts_worker_first_step_seconds_count{batched=\"false\"}");
    eprintln!(
        "batching worker: {calls} decoder calls, {single} of one window; first steps \
         batched {batched_first}, alone {alone_first}"
    );
    assert!(calls > 0.0, "decoder calls are counted:\n{m}");
    assert!(single < calls, "some calls held several windows");
    assert!(batched_first >= 1.0, "a first step ran in a batch");
    assert_eq!(
        batched_first + alone_first,
        4.0,
        "every request's first step is measured (and the warm-up's not)"
    );

    let calls = sample(&p, "tts_worker_decoder_batch_size_count");
    assert!(calls > 0.0);
    assert_eq!(
        sample(&p, "tts_worker_decoder_batch_size_bucket{le=\"1\"}"),
        calls,
        "without --decode-batch every call holds one window"
    );
    assert_eq!(
        sample(&p, "tts_worker_first_step_seconds_count{batched=\"true\"}"),
        0.0
    );
}
