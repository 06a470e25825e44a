//! `tts-client say`: speak text (whole, or streamed from standard input
//! as a context), verify every frame, write the WAV and print the report.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use tts_client::{Client, ClientError, Encoding, Reconnect, SynthesizeOptions, write_wav};
use tts_telemetry::exit;

#[derive(clap::Args)]
pub(crate) struct SayArgs {
    #[command(flatten)]
    pub(crate) url: crate::UrlArg,
    /// Text to speak; `-` or nothing reads standard input.
    text: Option<String>,
    /// Read the text from this file instead.
    #[arg(long, short = 'f', conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Where to write the WAV (mono 16-bit, at the stream's rate).
    #[arg(long, short = 'o', default_value = "speech.wav")]
    out: PathBuf,
    /// Voice name (see the worker's ListVoices); the server's default if unset.
    #[arg(long)]
    voice: Option<String>,
    /// Trace id to send with the request.
    #[arg(long)]
    trace_id: Option<String>,
    /// Ask for the frames as fast as the worker can synthesise them
    /// instead of in real time (for writing files).
    #[arg(long)]
    fast: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also play the audio on the default output device while it arrives
    /// (needs a build with `--features play`).
    #[arg(long)]
    play: bool,
    /// Read standard input as it arrives and speak it as a context
    /// (streamed text input): `some-llm | tts-client say --stream-input`.
    #[arg(long, conflicts_with_all = ["text", "file"])]
    stream_input: bool,
    /// With --play: audio buffered before playback starts, ms.
    #[arg(long, default_value_t = 100, requires = "play")]
    jitter_ms: u32,
    /// Speaking rate, 0.25 to 4 (1 is the voice's own).
    #[arg(long)]
    speed: Option<f32>,
    /// Piper's phoneme noise, 0 to 1.
    #[arg(long)]
    noise_scale: Option<f32>,
    /// Piper's duration noise, 0 to 1.
    #[arg(long)]
    noise_w: Option<f32>,
    /// Frame encoding on the wire: pcm_s16le, mulaw (8 kHz) or opus
    /// (48 kHz); the WAV is always PCM.
    #[arg(long, value_parser = ["pcm_s16le", "mulaw", "opus"])]
    encoding: Option<String>,
    /// Frame sample rate: 8000, 16000, 24000 or 48000.
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Ask for word timestamps: each word's start and end are printed with
    /// the report (and in --json's `words`).
    #[arg(long)]
    timestamps: bool,
    /// Reconnects after a refused connection, or one that drops before
    /// any audio came (then the text is sent again); waits 250 ms, then
    /// twice as long each time up to 4 s. 0 never reconnects.
    #[arg(long, default_value_t = Reconnect::default().retries)]
    retries: usize,
}

fn read_text(args: &SayArgs) -> anyhow::Result<String> {
    match (&args.text, &args.file) {
        (_, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        }
        (Some(text), None) if text != "-" => Ok(text.clone()),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            Ok(text)
        }
    }
}

/// Speaks the text `args` name through the orchestrator at `url`, writes
/// the WAV and prints the report; returns the exit code.
pub(crate) async fn run(url: &str, args: SayArgs) -> anyhow::Result<u8> {
    if args.play && !cfg!(feature = "play") {
        eprintln!(
            "tts-client: --play needs a build with playback: \
             cargo build --release -p tts-client --features play (needs apt libasound2-dev)"
        );
        return Ok(exit::CONFIG);
    }
    let source = if args.stream_input {
        Source::Stream(stdin_pieces())
    } else {
        Source::Whole(read_text(&args)?)
    };
    let opts = SynthesizeOptions {
        voice: args.voice.clone(),
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        trace_id: args.trace_id.clone(),
        fast: args.fast,
        speed: args.speed,
        noise_scale: args.noise_scale,
        noise_w: args.noise_w,
        encoding: args.encoding.as_deref().and_then(Encoding::from_wire),
        sample_rate: args.sample_rate,
        timestamps: args.timestamps,
    };
    let jitter = args.play.then_some(args.jitter_ms);
    let reconnect = Reconnect {
        retries: args.retries,
        ..Reconnect::default()
    };
    let (utterance, underruns) = speak_retrying(url, source, &opts, jitter, reconnect).await?;
    write_wav(&args.out, &utterance.samples, utterance.sample_rate)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let report = &utterance.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.to_text());
        if let Some(underruns) = underruns {
            println!(
                "underruns      {underruns} (playback, {} ms jitter buffer)",
                args.jitter_ms
            );
        }
        println!("wrote          {}", args.out.display());
    }
    // Frames that failed verification, or audio with quality events, are
    // bad data (the WAV is written all the same, for a look).
    Ok(
        if report.integrity_failures() > 0 || report.quality_events() > 0 {
            exit::DATA
        } else {
            exit::OK
        },
    )
}

/// Where the text comes from.
enum Source {
    /// All of it at once: one `synthesize`.
    Whole(String),
    /// Pieces as they arrive: a context.
    Stream(tokio::sync::mpsc::Receiver<String>),
}

/// Standard input, read on a thread of its own and handed on in pieces as
/// it arrives (whole UTF-8 characters only).
fn stdin_pieces() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let (mut buf, mut pending) = ([0u8; 4096], Vec::new());
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            let piece = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            if !piece.is_empty() && tx.blocking_send(piece).is_err() {
                break;
            }
        }
    });
    rx
}

/// Connects and speaks `source`, connecting again after a refused
/// connection or one that dropped before any audio (whole text is then
/// sent again; streamed input, already read, is not).
async fn speak_retrying(
    url: &str,
    mut source: Source,
    opts: &SynthesizeOptions,
    jitter_ms: Option<u32>,
    reconnect: Reconnect,
) -> anyhow::Result<(tts_client::Utterance, Option<u64>)> {
    let mut delays = reconnect.delays();
    loop {
        let mut audio = false;
        let error = match Client::connect(url).await {
            Ok(mut client) => {
                // Whole text can be sent again; streamed input is read once.
                let (attempt, again) = match source {
                    Source::Whole(text) => (Source::Whole(text.clone()), Some(text)),
                    stream => (stream, None),
                };
                match speak(&mut client, attempt, opts, jitter_ms, &mut audio).await {
                    Ok(done) => return Ok(done),
                    Err(e) => match again {
                        Some(text) => {
                            source = Source::Whole(text);
                            e
                        }
                        None => return Err(e),
                    },
                }
            }
            Err(e) => anyhow::Error::new(e),
        };
        let transient = error
            .downcast_ref::<ClientError>()
            .is_some_and(ClientError::is_transient);
        match delays.next() {
            Some(wait) if transient && !audio => {
                eprintln!(
                    "tts-client: {error}; reconnecting in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            _ => return Err(error),
        }
    }
}

/// Speaks `source`, verifying every frame, and plays the audio while it
/// arrives when `jitter_ms` is given; returns the utterance and, when
/// playing, the underruns. `audio` turns true with the first frame.
async fn speak(
    client: &mut Client,
    source: Source,
    opts: &SynthesizeOptions,
    jitter_ms: Option<u32>,
    audio: &mut bool,
) -> anyhow::Result<(tts_client::Utterance, Option<u64>)> {
    use tts_client::Collector;
    let sent = std::time::Instant::now();
    let (request_id, mut pieces) = match source {
        Source::Whole(text) => (client.start(&text, opts).await?, None),
        Source::Stream(rx) => (client.open_context(opts).await?, Some(rx)),
    };
    let mut collector = Collector::new(request_id.clone(), sent);
    let mut player = Playback::new(jitter_ms);
    loop {
        let event = tokio::select! {
            piece = next_piece(&mut pieces) => {
                match piece {
                    Some(text) => client.append(&request_id, &text).await?,
                    None => {
                        client.close_context(&request_id).await?;
                        pieces = None;
                    }
                }
                continue;
            }
            event = client.next_event() => event?,
        };
        *audio |= matches!(event, tts_client::Event::Frame(..));
        let done = collector.on_event(event)?;
        player.feed(&collector, done.as_ref())?;
        if let Some(utterance) = done {
            return Ok((utterance, player.finish()));
        }
    }
}

/// The next piece of streamed input; pending forever when there is none.
async fn next_piece(pieces: &mut Option<tokio::sync::mpsc::Receiver<String>>) -> Option<String> {
    match pieces {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Playback while frames arrive (with the `play` feature).
struct Playback {
    jitter_ms: Option<u32>,
    #[cfg(feature = "play")]
    player: Option<tts_client::playback::Player>,
    #[cfg(feature = "play")]
    fed: usize,
}

impl Playback {
    fn new(jitter_ms: Option<u32>) -> Self {
        Self {
            jitter_ms,
            #[cfg(feature = "play")]
            player: None,
            #[cfg(feature = "play")]
            fed: 0,
        }
    }

    /// Hands the samples that arrived since the last call to the device.
    #[cfg(feature = "play")]
    fn feed(
        &mut self,
        collector: &tts_client::Collector,
        done: Option<&tts_client::Utterance>,
    ) -> anyhow::Result<()> {
        use tts_client::playback::Player;
        let Some(jitter_ms) = self.jitter_ms else {
            return Ok(());
        };
        if self.player.is_none() && collector.stream_id().is_some() {
            self.player = Some(Player::start(collector.format().sample_rate, jitter_ms)?);
        }
        // At the end the samples have moved into the utterance (trimmed to
        // the exact count, so possibly shorter than what was fed).
        let all = done.map_or(collector.samples(), |u| &u.samples[..]);
        if let Some(p) = &self.player
            && self.fed < all.len()
        {
            p.push(&all[self.fed..]);
            self.fed = all.len();
        }
        Ok(())
    }

    #[cfg(not(feature = "play"))]
    fn feed(
        &mut self,
        _collector: &tts_client::Collector,
        _done: Option<&tts_client::Utterance>,
    ) -> anyhow::Result<()> {
        match self.jitter_ms {
            Some(_) => anyhow::bail!(
                "this build has no playback: rebuild with `--features play` (needs libasound2-dev)"
            ),
            None => Ok(()),
        }
    }

    /// Waits for the device to play everything; the underruns, if playing.
    fn finish(self) -> Option<u64> {
        #[cfg(feature = "play")]
        if let Some(p) = self.player {
            return Some(tokio::task::block_in_place(|| p.finish()));
        }
        self.jitter_ms.map(|_| 0)
    }
}
