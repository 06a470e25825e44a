//! `tts-client doctor …`: each subcommand's flags, and one function per
//! subcommand that runs it and says which exit code its failure means.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use tts_client::DEFAULT_URL;
use tts_client::doctor::{self, Findings};
use tts_telemetry::exit;

use crate::UrlArg;

/// Where the orchestrator's admin listener is unless told.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:8081";

#[derive(Subcommand)]
pub(crate) enum DoctorCommand {
    /// Start, list or stop injected faults (chaos experiments) on the
    /// processes that apply them (they must run with
    /// `--allow-fault-injection`).
    Chaos(ChaosArgs),
    /// Observe the running pipeline for a window and say what is wrong,
    /// where (client, orchestrator, worker-link, worker, redis) and what
    /// to do; exit 69 when anything is (a warning or worse).
    Why(WhyArgs),
    /// Every component's liveness and readiness, metrics endpoints, Redis,
    /// listening ports, disk and memory, and error counts from the metrics.
    Health(HealthArgs),
    /// WebSocket ping and deep ping (through the worker over gRPC) round
    /// trips: min, mean, p50, p95, p99, max.
    Rtt {
        /// Pings of each kind.
        #[arg(long, default_value_t = 20)]
        count: u32,
        #[command(flatten)]
        url: UrlArg,
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
    Timeline(TimelineArgs),
    /// Redis: slow log, memory by key prefix (registry, phrase cache,
    /// other), used memory against maxmemory, clients, PING latency.
    Redis {
        /// Redis URL.
        #[arg(long, env = "TTS_REDIS_URL", default_value = doctor::redis::DEFAULT_URL)]
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
    Profile(ProfileArgs),
    /// Synthesise a probe sentence and check every frame.
    Frames {
        /// The sentence to speak.
        #[arg(default_value = doctor::frames::PROBE_TEXT)]
        text: String,
        #[command(flatten)]
        url: UrlArg,
    },
}

impl DoctorCommand {
    /// Whether the subcommand was given its own `--url`.
    pub(crate) fn names_url(&self) -> bool {
        match self {
            Self::Rtt { url, .. } | Self::Frames { url, .. } => url.url.is_some(),
            Self::Why(args) => args.url.url.is_some(),
            Self::Health(args) => args.url.url.is_some(),
            _ => false,
        }
    }
}

#[derive(Args)]
pub(crate) struct ChaosArgs {
    #[command(subcommand)]
    action: ChaosAction,
    /// Orchestrator admin URL: the workers are found from it.
    #[arg(
        long,
        global = true,
        env = "TTS_ORCHESTRATOR_ADMIN",
        default_value = DEFAULT_ADMIN
    )]
    orchestrator: String,
    /// One worker's metrics URL (default: every worker).
    #[arg(long, global = true)]
    worker: Option<String>,
    /// The processes' `--admin-token`.
    #[arg(long, global = true, env = "TTS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Args)]
pub(crate) struct WhyArgs {
    #[command(flatten)]
    url: UrlArg,
    /// Orchestrator admin URL: everything else is found from it.
    #[arg(
        long,
        env = "TTS_ORCHESTRATOR_ADMIN",
        default_value = DEFAULT_ADMIN
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
}

#[derive(Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    url: UrlArg,
    /// Orchestrator admin URL.
    #[arg(
        long,
        env = "TTS_ORCHESTRATOR_ADMIN",
        default_value = DEFAULT_ADMIN
    )]
    orchestrator: String,
    /// Worker gRPC URL (default: the one the orchestrator relays to;
    /// from TTS_WORKER_URL, the first of its comma-separated list, as the
    /// orchestrator reads it).
    #[arg(long, env = "TTS_WORKER_URL", value_delimiter = ',', num_args = 1)]
    worker: Vec<String>,
    /// Worker metrics URL (default: the one the worker reports through
    /// the orchestrator's `/info`).
    #[arg(long)]
    worker_metrics: Option<String>,
    /// Redis URL, when one is used.
    #[arg(long, env = "TTS_REDIS_URL")]
    redis: Option<String>,
}

#[derive(Args)]
pub(crate) struct TimelineArgs {
    /// First time kept: RFC 3339, or a duration before now (`10m`,
    /// `90s`, `2h`).
    #[arg(long)]
    since: doctor::timeline::When,
    /// Last time kept, in the same forms (default: the end of the logs).
    #[arg(long)]
    until: Option<doctor::timeline::When>,
    /// JSON log files (one or more, any order).
    #[arg(long = "log", required = true, num_args = 1..)]
    logs: Vec<PathBuf>,
    /// Keep only marked lines (the counts still cover every line).
    #[arg(long)]
    marked: bool,
}

#[derive(Args)]
pub(crate) struct ProfileArgs {
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
    #[arg(long, value_enum, default_value_t = doctor::profile::Target::All)]
    target: doctor::profile::Target,
    /// Orchestrator admin URL: the workers are found from it.
    #[arg(
        long,
        env = "TTS_ORCHESTRATOR_ADMIN",
        default_value = DEFAULT_ADMIN
    )]
    orchestrator: String,
    /// The processes' `--admin-token`.
    #[arg(long, env = "TTS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
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

/// What one doctor subcommand came to.
enum Outcome {
    /// Its findings, and the exit code when they fail.
    Findings(Findings, u8),
    /// It could not run: exit with this code (the reason is printed).
    Exit(u8),
}

/// Runs one doctor subcommand and prints its findings as a table, or as
/// JSON; returns the exit code. `outer` is the `--url` given before the
/// subcommand.
pub(crate) async fn run(outer: &UrlArg, command: DoctorCommand, json: bool) -> anyhow::Result<u8> {
    let ws = |url: UrlArg| url.or(outer).unwrap_or_else(|| DEFAULT_URL.to_owned());
    let outcome = match command {
        DoctorCommand::Chaos(args) => chaos(args).await,
        DoctorCommand::Why(mut args) => {
            let url = std::mem::take(&mut args.url).or(outer);
            why(args, url).await
        }
        DoctorCommand::Health(mut args) => {
            let url = std::mem::take(&mut args.url).or(outer);
            health(args, url).await
        }
        DoctorCommand::Rtt { count, url } => rtt(&ws(url), count).await?,
        DoctorCommand::Trace { trace_id, logs } => trace(&trace_id, &logs)?,
        DoctorCommand::Timeline(args) => timeline(args)?,
        DoctorCommand::Redis { redis } => self::redis(&redis).await,
        DoctorCommand::Probe { grpc, http } => probe(grpc.as_deref(), http.as_deref()).await,
        DoctorCommand::Profile(args) => profile(args).await,
        DoctorCommand::Frames { text, url } => frames(&ws(url), &text).await?,
    };
    let (findings, failed) = match outcome {
        Outcome::Findings(findings, failed) => (findings, failed),
        Outcome::Exit(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&findings.detail)?);
    } else {
        print!("{}", findings.to_table());
    }
    Ok(findings.exit_code(failed))
}

/// `doctor chaos`: a fault the command line gets wrong is a usage error,
/// found before anything is sent.
async fn chaos(args: ChaosArgs) -> Outcome {
    let action = match chaos_action(args.action) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tts-client: {e}");
            return Outcome::Exit(exit::CONFIG);
        }
    };
    let targets = doctor::chaos::Targets {
        orchestrator: args.orchestrator,
        worker: args.worker,
        token: args.admin_token,
    };
    Outcome::Findings(
        doctor::chaos::run(&targets, &action).await,
        exit::UNAVAILABLE,
    )
}

/// The command line's chaos action, its fault checked before anything is
/// sent.
fn chaos_action(action: ChaosAction) -> Result<doctor::chaos::Action, doctor::chaos::BadFault> {
    use doctor::chaos::{Action, Params, request};
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

/// `doctor why`: a pipeline that cannot be observed at all is unavailable.
async fn why(args: WhyArgs, url: Option<String>) -> Outcome {
    let opts = doctor::why::Options {
        orchestrator: args.orchestrator,
        window: Duration::from_secs_f64(args.window),
        prometheus: args.prometheus,
        ws_url: url,
        redis: args.redis,
        worker_token: args.worker_auth_token,
    };
    match doctor::why::run(&opts).await {
        Ok(diagnosis) => Outcome::Findings(diagnosis.findings(), exit::UNAVAILABLE),
        Err(e) => {
            eprintln!("tts-client: {e}");
            Outcome::Exit(exit::UNAVAILABLE)
        }
    }
}

/// `doctor health`.
/// Nothing answering at the default admin address gets a hint naming the
/// flag.
async fn health(args: HealthArgs, url: Option<String>) -> Outcome {
    let default_admin = args.orchestrator == DEFAULT_ADMIN;
    let targets = doctor::health::Targets {
        orchestrator: args.orchestrator,
        worker: args.worker.into_iter().next(),
        worker_metrics: args.worker_metrics,
        url,
        redis: args.redis,
    };
    let findings = doctor::health::run(&targets).await;
    let admin_closed = findings.rows.iter().any(|row| {
        row.first().is_some_and(|c| c == "listening: admin port")
            && row.get(1).is_some_and(|c| c == "FAIL")
    });
    if default_admin && admin_closed {
        eprintln!(
            "tts-client: nothing answered at the default orchestrator admin address {DEFAULT_ADMIN}; \
             --orchestrator (or TTS_ORCHESTRATOR_ADMIN) names it"
        );
    }
    Outcome::Findings(findings, exit::UNAVAILABLE)
}

/// `doctor rtt`: at least one ping of each kind.
async fn rtt(ws: &str, count: u32) -> anyhow::Result<Outcome> {
    Ok(Outcome::Findings(
        doctor::rtt::run(ws, count.max(1)).await?,
        exit::UNAVAILABLE,
    ))
}

/// `doctor trace`.
fn trace(trace_id: &str, logs: &[PathBuf]) -> anyhow::Result<Outcome> {
    Ok(Outcome::Findings(
        doctor::trace::run(trace_id, logs)?,
        exit::FAILURE,
    ))
}

/// `doctor timeline`: the range is resolved against the clock now.
fn timeline(args: TimelineArgs) -> anyhow::Result<Outcome> {
    let range = doctor::timeline::Range::resolve(args.since, args.until, SystemTime::now());
    Ok(Outcome::Findings(
        doctor::timeline::run(&range, &args.logs, args.marked)?,
        exit::FAILURE,
    ))
}

/// `doctor redis`.
async fn redis(url: &str) -> Outcome {
    Outcome::Findings(doctor::redis::run(url).await, exit::UNAVAILABLE)
}

/// `doctor probe`.
async fn probe(grpc: Option<&str>, http: Option<&str>) -> Outcome {
    Outcome::Findings(doctor::health::probe(grpc, http).await, exit::UNAVAILABLE)
}

/// `doctor profile`.
async fn profile(args: ProfileArgs) -> Outcome {
    let options = doctor::profile::Options {
        orchestrator: args.orchestrator,
        target: args.target,
        seconds: args.seconds,
        format: args.format,
        out: args.out,
        token: args.admin_token,
    };
    Outcome::Findings(doctor::profile::run(&options).await, exit::UNAVAILABLE)
}

/// `doctor frames`: audio that fails its checks is bad data.
async fn frames(ws: &str, text: &str) -> anyhow::Result<Outcome> {
    Ok(Outcome::Findings(
        doctor::frames::run(ws, text).await?,
        exit::DATA,
    ))
}
