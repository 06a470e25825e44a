//! `tts-client`: speak text through the orchestrator, verify every frame,
//! write a WAV and report what was measured.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tts_client::{Client, DEFAULT_URL, Encoding, SynthesizeOptions, write_wav};
use tts_telemetry::exit;

#[derive(Parser)]
#[command(
    name = "tts-client",
    version,
    about = "Client for the TTS orchestrator"
)]
struct Cli {
    /// Orchestrator WebSocket URL (default `ws://127.0.0.1:8080/ws`; `doctor
    /// health` finds it through the orchestrator).
    #[arg(long, global = true, env = "TTS_URL")]
    url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesise text and save it as a WAV file.
    Say(SayArgs),
    /// Diagnose a running system (exit code 69 when a service is unhealthy,
    /// 65 when audio fails its checks).
    Doctor {
        #[command(subcommand)]
        command: DoctorCommand,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Start, list or stop injected faults (chaos experiments) on the
    /// processes that apply them (they must run with
    /// `--allow-fault-injection`).
    Chaos {
        #[command(subcommand)]
        action: ChaosAction,
        /// Orchestrator admin URL: the workers are found from it.
        #[arg(
            long,
            global = true,
            env = "TTS_ORCHESTRATOR_ADMIN",
            default_value = "http://127.0.0.1:8081"
        )]
        orchestrator: String,
        /// One worker's metrics URL (default: every worker).
        #[arg(long, global = true)]
        worker: Option<String>,
        /// The processes' `--admin-token`.
        #[arg(long, global = true, env = "TTS_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Observe the running pipeline for a window and say what is wrong,
    /// where (client, orchestrator, worker-link, worker, redis) and what
    /// to do; exit 69 when anything is (a warning or worse).
    Why {
        /// Orchestrator admin URL: everything else is found from it.
        #[arg(
            long,
            env = "TTS_ORCHESTRATOR_ADMIN",
            default_value = "http://127.0.0.1:8081"
        )]
        orchestrator: String,
        /// Seconds to observe (1 to 600).
        #[arg(long, default_value_t = 10.0, value_parser = parse_window)]
        window: f64,
        /// Read the window from this Prometheus server (its query API)
        /// instead of scraping at both ends.
        #[arg(long)]
        prometheus: Option<String>,
        /// Redis URL (default: the one the orchestrator uses).
        #[arg(long)]
        redis: Option<String>,
        /// The workers' bearer token, for their `GetLoad`.
        #[arg(long, env = "TTS_WORKER_AUTH_TOKEN", hide_env_values = true)]
        worker_auth_token: Option<String>,
    },
    /// Every component's liveness and readiness, metrics endpoints, Redis,
    /// listening ports, disk and memory, and error counts from the metrics.
    Health {
        /// Orchestrator admin URL.
        #[arg(
            long,
            env = "TTS_ORCHESTRATOR_ADMIN",
            default_value = "http://127.0.0.1:8081"
        )]
        orchestrator: String,
        /// Worker gRPC URL (default: the one the orchestrator relays to).
        #[arg(long, env = "TTS_WORKER_URL")]
        worker: Option<String>,
        /// Worker metrics URL (default: the one the worker reports through
        /// the orchestrator's `/info`).
        #[arg(long)]
        worker_metrics: Option<String>,
        /// Redis URL, when one is used.
        #[arg(long, env = "TTS_REDIS_URL")]
        redis: Option<String>,
    },
    /// WebSocket ping and deep ping (through the worker over gRPC) round
    /// trips: min, mean, p50, p95, p99, max.
    Rtt {
        /// Pings of each kind.
        #[arg(long, default_value_t = 20)]
        count: u32,
    },
    /// One request's timeline across processes, from their JSON logs.
    Trace {
        /// The trace id to follow.
        trace_id: String,
        /// JSON log files (one or more, any order).
        #[arg(long = "log", required = true, num_args = 1..)]
        logs: Vec<PathBuf>,
    },
    /// Every request's log lines in a time range, merged from the
    /// services' JSON logs and sorted, with errors, refusals, breaker
    /// changes and faults marked, and a count of each by component.
    Timeline {
        /// First time kept: RFC 3339, or a duration before now (`10m`,
        /// `90s`, `2h`).
        #[arg(long)]
        since: tts_client::doctor::timeline::When,
        /// Last time kept, in the same forms (default: the end of the logs).
        #[arg(long)]
        until: Option<tts_client::doctor::timeline::When>,
        /// JSON log files (one or more, any order).
        #[arg(long = "log", required = true, num_args = 1..)]
        logs: Vec<PathBuf>,
        /// Keep only marked lines (the counts still cover every line).
        #[arg(long)]
        marked: bool,
    },
    /// Redis: slow log, memory by key prefix (registry, phrase cache,
    /// other), used memory against maxmemory, clients, PING latency.
    Redis {
        /// Redis URL.
        #[arg(long, env = "TTS_REDIS_URL", default_value = tts_client::doctor::redis::DEFAULT_URL)]
        redis: String,
    },
    /// One health check, for container and orchestration probes: exit 0
    /// when it passes, 69 when not. `--grpc URL` asks a worker's
    /// `grpc.health.v1` for SERVING; `--http URL` wants a 200 (e.g. an
    /// orchestrator's `/ready`).
    Probe {
        /// A worker's gRPC URL.
        #[arg(long, conflicts_with = "http", required_unless_present = "http")]
        grpc: Option<String>,
        /// An HTTP URL that must answer 200.
        #[arg(long)]
        http: Option<String>,
    },
    /// Take a CPU profile of the orchestrator, the workers, or both at
    /// once, and save each as a flamegraph (svg) or pprof protobuf (pb).
    /// The processes must run with `--allow-profiling`.
    Profile {
        /// Seconds to sample (1 to 60).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
        seconds: u64,
        /// `svg` (a flamegraph) or `pb` (for `go tool pprof`).
        #[arg(long, value_enum, default_value_t = tts_telemetry::profile::Format::Svg)]
        format: tts_telemetry::profile::Format,
        /// The file to write (default
        /// `profile-<process>-<host>_<port>.<svg|pb>` here; with several
        /// processes each name gets `-<process>-<host>_<port>` added).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Which processes.
        #[arg(long, value_enum, default_value_t = tts_client::doctor::profile::Target::All)]
        target: tts_client::doctor::profile::Target,
        /// Orchestrator admin URL: the workers are found from it.
        #[arg(
            long,
            env = "TTS_ORCHESTRATOR_ADMIN",
            default_value = "http://127.0.0.1:8081"
        )]
        orchestrator: String,
        /// The processes' `--admin-token`.
        #[arg(long, env = "TTS_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Synthesise a probe sentence and check every frame.
    Frames {
        /// The sentence to speak.
        #[arg(default_value = tts_client::doctor::frames::PROBE_TEXT)]
        text: String,
    },
}

#[derive(Subcommand)]
enum ChaosAction {
    /// Start a fault: link_latency, corrupt_frames, drop_frames, slowdown,
    /// stall, clipping, dc_offset or dead_air.
    Start {
        /// The kind of fault.
        kind: String,
        /// How long it lasts, seconds (at most 3600).
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// link_latency: added delay, ms (default 150).
        #[arg(long)]
        latency_ms: Option<u32>,
        /// link_latency: jitter, ms (default 0).
        #[arg(long)]
        jitter_ms: Option<u32>,
        /// corrupt_frames, drop_frames: every n-th frame (default 25).
        #[arg(long)]
        every: Option<u32>,
        /// slowdown: how many times slower each step is (default 4).
        #[arg(long)]
        factor: Option<f64>,
        /// clipping, dead_air: start, ms into each new request.
        #[arg(long)]
        from_ms: Option<u32>,
        /// clipping, dead_air: length, ms.
        #[arg(long)]
        len_ms: Option<u32>,
        /// dc_offset: the offset in sample units (default 2000).
        #[arg(long, allow_negative_numbers = true)]
        offset: Option<i16>,
    },
    /// List the active faults of every process.
    List,
    /// Stop the active faults (of one kind, or all).
    Stop {
        /// Only this kind.
        kind: Option<String>,
    },
}

#[derive(clap::Args)]
struct SayArgs {
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = cli.url.clone();
    let result = match cli.command {
        Command::Say(args) => say(url.as_deref().unwrap_or(DEFAULT_URL), args).await,
        Command::Doctor { command, json } => doctor(url, command, json).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tts-client: {}", error_chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code for an error: the client's mistakes (as the server
/// judged them) are bad data; anything that means the service is not
/// there or not taking work is unavailable.
fn exit_code(e: &anyhow::Error) -> u8 {
    use tts_client::ClientError;
    use tts_protocol::{ErrorCode, Outcome};
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Server { code, .. }) => {
            match ErrorCode::from_wire(code).map(ErrorCode::outcome) {
                Some(Outcome::ClientError) => exit::DATA,
                _ => exit::UNAVAILABLE,
            }
        }
        Some(ClientError::WebSocket(_) | ClientError::Closed | ClientError::Timeout(_)) => {
            exit::UNAVAILABLE
        }
        Some(ClientError::Protocol(_)) | None => exit::FAILURE,
    }
}

/// The error and its causes, each said once (some causes repeat their
/// source's text in their own).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// The command line's chaos action, its fault checked before anything is
/// sent.
fn chaos_action(
    action: ChaosAction,
) -> Result<tts_client::doctor::chaos::Action, tts_client::doctor::chaos::BadFault> {
    use tts_client::doctor::chaos::{Action, Params, request};
    Ok(match action {
        ChaosAction::Start {
            kind,
            duration,
            latency_ms,
            jitter_ms,
            every,
            factor,
            from_ms,
            len_ms,
            offset,
        } => {
            let params = Params {
                latency_ms,
                jitter_ms,
                every,
                factor,
                from_ms,
                len_ms,
                offset,
            };
            Action::Start(request(&kind, &params, duration)?)
        }
        ChaosAction::List => Action::List,
        ChaosAction::Stop { kind } => Action::Stop(kind),
    })
}

/// `--window`: seconds, 1 to 600.
fn parse_window(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (1.0..=600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 1 to 600")),
    }
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

async fn say(url: &str, args: SayArgs) -> anyhow::Result<u8> {
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
    let mut client = Client::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let opts = SynthesizeOptions {
        voice: args.voice.clone(),
        trace_id: args.trace_id.clone(),
        fast: args.fast,
        speed: args.speed,
        noise_scale: args.noise_scale,
        noise_w: args.noise_w,
        encoding: args.encoding.as_deref().and_then(Encoding::from_wire),
        sample_rate: args.sample_rate,
        timestamps: args.timestamps,
        ..SynthesizeOptions::default()
    };
    let jitter = args.play.then_some(args.jitter_ms);
    let (utterance, underruns) = speak(&mut client, source, &opts, jitter).await?;
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

async fn doctor(url: Option<String>, command: DoctorCommand, json: bool) -> anyhow::Result<u8> {
    use tts_client::doctor;
    let ws = url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let (findings, failed) = match command {
        DoctorCommand::Chaos {
            action,
            orchestrator,
            worker,
            admin_token,
        } => {
            let action = match chaos_action(action) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("tts-client: {e}");
                    return Ok(exit::CONFIG);
                }
            };
            let targets = doctor::chaos::Targets {
                orchestrator,
                worker,
                token: admin_token,
            };
            (
                doctor::chaos::run(&targets, &action).await,
                exit::UNAVAILABLE,
            )
        }
        DoctorCommand::Why {
            orchestrator,
            window,
            prometheus,
            redis,
            worker_auth_token,
        } => {
            let opts = doctor::why::Options {
                orchestrator,
                window: std::time::Duration::from_secs_f64(window),
                prometheus,
                ws_url: url,
                redis,
                worker_token: worker_auth_token,
            };
            match doctor::why::run(&opts).await {
                Ok(diagnosis) => (diagnosis.findings(), exit::UNAVAILABLE),
                Err(e) => {
                    eprintln!("tts-client: {e}");
                    return Ok(exit::UNAVAILABLE);
                }
            }
        }
        DoctorCommand::Health {
            orchestrator,
            worker,
            worker_metrics,
            redis,
        } => {
            let targets = doctor::health::Targets {
                orchestrator,
                worker,
                worker_metrics,
                url,
                redis,
            };
            (doctor::health::run(&targets).await, exit::UNAVAILABLE)
        }
        DoctorCommand::Rtt { count } => (
            doctor::rtt::run(&ws, count.max(1)).await?,
            exit::UNAVAILABLE,
        ),
        DoctorCommand::Trace { trace_id, logs } => {
            (doctor::trace::run(&trace_id, &logs)?, exit::FAILURE)
        }
        DoctorCommand::Timeline {
            since,
            until,
            logs,
            marked,
        } => {
            let range =
                doctor::timeline::Range::resolve(since, until, std::time::SystemTime::now());
            (doctor::timeline::run(&range, &logs, marked)?, exit::FAILURE)
        }
        DoctorCommand::Redis { redis } => (doctor::redis::run(&redis).await, exit::UNAVAILABLE),
        DoctorCommand::Frames { text } => (doctor::frames::run(&ws, &text).await?, exit::DATA),
        DoctorCommand::Profile {
            seconds,
            format,
            out,
            target,
            orchestrator,
            admin_token,
        } => {
            let options = doctor::profile::Options {
                orchestrator,
                target,
                seconds,
                format,
                out,
                token: admin_token,
            };
            (doctor::profile::run(&options).await, exit::UNAVAILABLE)
        }
        DoctorCommand::Probe { grpc, http } => (
            doctor::health::probe(grpc.as_deref(), http.as_deref()).await,
            exit::UNAVAILABLE,
        ),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&findings.detail)?);
    } else {
        print!("{}", findings.to_table());
    }
    Ok(findings.exit_code(failed))
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

/// Speaks `source`, verifying every frame, and plays the audio while it
/// arrives when `jitter_ms` is given; returns the utterance and, when
/// playing, the underruns.
async fn speak(
    client: &mut Client,
    source: Source,
    opts: &SynthesizeOptions,
    jitter_ms: Option<u32>,
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

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
