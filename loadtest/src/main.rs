//! `tts-loadtest`: load tests a running orchestrator.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tts_loadtest::capacity::{self, Plan, RateSearch, Search, Target};
use tts_loadtest::corpus::{self, Mix};
use tts_loadtest::run::{Limit, Mode, Pace, RunConfig, run};
use tts_loadtest::stats::Report;

/// Load tester for the TTS orchestrator.
#[derive(Parser, Debug)]
#[command(name = "tts-loadtest", version, about, after_help = tts_telemetry::exit::help())]
struct Args {
    /// Orchestrator WebSocket URL.
    #[arg(long, env = "TTS_URL", default_value = tts_client::DEFAULT_URL)]
    url: String,
    /// Closed loop: sessions that each send their next request when the last ends.
    #[arg(long, short = 'c', default_value_t = 1, conflicts_with = "rate")]
    concurrency: usize,
    /// Open loop: requests per second, timed from their scheduled start
    /// (coordinated omission corrected); one connection per request.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop (--rate or --rate-search): arrivals at fixed intervals
    /// instead of Poisson.
    #[arg(long)]
    fixed_interval: bool,
    /// How long to send requests (e.g. 30s, 2m).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Send this many requests instead of running for a duration.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Spread session starts (closed loop) or ramp the rate (open loop) over this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    ramp_up: Duration,
    /// Closed loop: requests per connection before reconnecting (0 = keep the connection).
    #[arg(long, default_value_t = 0)]
    requests_per_connection: u64,
    /// Closed loop: when a session sends its next request (`playout`: once
    /// the previous audio has finished playing, plus --think-time).
    #[arg(long, value_enum, default_value = "back-to-back")]
    pace: Pace,
    /// Closed loop: retry a refused request at once instead of after the
    /// server's `retry_after_ms` (an abusive client; the default waits).
    #[arg(long)]
    ignore_retry_after: bool,
    /// Closed loop with `--pace playout`: pause after the audio ends.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    think_time: Duration,
    /// Ask for frames as fast as the worker synthesises them
    /// (`"delivery":"fast"`) instead of in real time: measures the
    /// synthesis throughput, not what listeners hear.
    #[arg(long)]
    fast: bool,
    /// Send each text as streamed input (a context), one word per piece
    /// every this long (e.g. 50ms, as a language model writes), and report
    /// the time from the piece that completes the first clause to its
    /// first audio (`first_audio_after_text`).
    #[arg(long, value_parser = humantime::parse_duration)]
    stream_input: Option<Duration>,
    /// Built-in texts to send.
    #[arg(long, value_enum, default_value = "mixed")]
    mix: Mix,
    /// Texts to send instead, one per line.
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Voice to ask for (the server's default if unset).
    #[arg(long)]
    voice: Option<String>,
    /// Jitter buffers (ms) to count playout underruns against.
    #[arg(long, value_delimiter = ',', default_value = "20,60,120")]
    jitter_buffer_ms: Vec<u64>,
    /// Interval of the ping side channel (0 disables it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    ping_interval: Duration,
    /// Longest wait for any message of a request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// Open loop: most requests outstanding; more are dropped and counted.
    #[arg(long, default_value_t = 4096)]
    max_outstanding: usize,
    /// Write the report as JSON (schema: loadtest/schema.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the differences from an earlier --json report.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Draw time to first audio over the run and its percentile curve (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Step concurrency (doubling, then bisecting) to find the most
    /// concurrent streams that meet --ttfa-p99, --underruns and --refused.
    #[arg(long)]
    find_capacity: bool,
    /// With --find-capacity: search the open-loop arrival rate (Poisson)
    /// instead of concurrency, and report it also as concurrent real-time
    /// streams and as a share of the saturation throughput.
    #[arg(long, requires = "find_capacity")]
    rate_search: bool,
    /// Rate search: the first rate tried, requests per second.
    #[arg(long, default_value_t = 1.0)]
    start_rate: f64,
    /// Rate search: the largest rate tried, requests per second.
    #[arg(long, default_value_t = 64.0)]
    max_rate: f64,
    /// Rate search: stop bisecting when pass and fail are this close, req/s.
    #[arg(long, default_value_t = 0.25)]
    rate_resolution: f64,
    /// Rate search: the saturation throughput (audio seconds per second)
    /// to report the answer against; measured first (16 sessions back to
    /// back with fast delivery) when not given.
    #[arg(long)]
    saturation: Option<f64>,
    /// Capacity target: largest share of requests refused with `overloaded`.
    #[arg(long, default_value_t = 0.01)]
    refused: f64,
    /// Capacity target: p99 time to first audio, ms.
    #[arg(long, default_value_t = 500.0)]
    ttfa_p99: f64,
    /// Capacity target: late frames allowed at --capacity-buffer-ms.
    #[arg(long, default_value_t = 0)]
    underruns: u64,
    /// Capacity target: the jitter buffer underruns are counted against, ms.
    #[arg(long, default_value_t = 60)]
    capacity_buffer_ms: u64,
    /// Capacity search: largest concurrency to try.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Also hold this many idle connections open for the whole run (to
    /// measure what idle clients cost the server).
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    fn run_config(&self, mode: Mode) -> anyhow::Result<RunConfig> {
        let texts = match &self.texts {
            Some(path) => {
                corpus::from_file(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => corpus::builtin(self.mix),
        };
        anyhow::ensure!(!texts.is_empty(), "no texts to send");
        let mut buffers: Vec<u64> = self.jitter_buffer_ms.clone();
        if self.find_capacity && !buffers.contains(&self.capacity_buffer_ms) {
            buffers.push(self.capacity_buffer_ms);
        }
        Ok(RunConfig {
            url: self.url.clone(),
            mode,
            limit: self
                .requests
                .map_or(Limit::Duration(self.duration), Limit::Requests),
            ramp_up: self.ramp_up,
            requests_per_connection: self.requests_per_connection,
            texts,
            voice: self.voice.clone(),
            buffers: buffers.into_iter().map(Duration::from_millis).collect(),
            ping_interval: self.ping_interval,
            request_timeout: self.request_timeout,
            max_outstanding: self.max_outstanding,
            pace: self.pace,
            honour_retry_after: !self.ignore_retry_after,
            think_time: self.think_time,
            fast: self.fast,
            stream_input: self.stream_input,
        })
    }

    fn mode(&self) -> Mode {
        match self.rate {
            Some(rate) => Mode::Open {
                rate,
                poisson: !self.fixed_interval,
            },
            None => Mode::Closed {
                concurrency: self.concurrency,
            },
        }
    }
}

fn config_json(args: &Args, config: &RunConfig) -> serde_json::Value {
    let mix = if args.texts.is_some() {
        "file".to_owned()
    } else {
        format!("{:?}", args.mix).to_lowercase()
    };
    config.to_json(&mix)
}

async fn measure(args: &Args, config: &RunConfig) -> Report {
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        match config.limit {
            Limit::Requests(n) => ProgressBar::new(n),
            Limit::Duration(_) => ProgressBar::new_spinner(),
        }
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos} requests {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let (agg, wall) = run(config, |agg| {
        bar.set_position(agg.finished());
        let rate = agg.finished() as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{rate:.1} req/s, p99 TTFA {:.1} ms",
            agg.ttfa.percentiles().p99
        ));
    })
    .await;
    bar.finish_and_clear();
    agg.report(config_json(args, config), wall)
}

/// `--find-capacity`: the search the flags describe, each step measured
/// as a run is.
async fn find_capacity(args: &Args) -> anyhow::Result<(Report, serde_json::Value)> {
    let plan = Plan {
        target: Target {
            ttfa_p99_ms: args.ttfa_p99,
            underruns: args.underruns,
            buffer_ms: args.capacity_buffer_ms,
            refused_ratio: args.refused,
        },
        search: if args.rate_search {
            Search {
                start: args.start_rate,
                max: args.max_rate,
                resolution: args.rate_resolution,
                whole: false,
            }
        } else {
            Search::concurrency(args.max_concurrency)
        },
        rate: args.rate_search.then_some(RateSearch {
            poisson: !args.fixed_interval,
            saturation: args.saturation,
        }),
    };
    let base = args.run_config(args.mode())?;
    capacity::find(&plan, &base, async |config| measure(args, config).await)
        .await
        .context("no step ran")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match main_result(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tts-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_result(args: &Args) -> anyhow::Result<ExitCode> {
    let mut idle = Vec::with_capacity(args.idle_connections);
    for _ in 0..args.idle_connections {
        idle.push(
            tts_client::Client::connect(&args.url)
                .await
                .context("opening an idle connection")?,
        );
    }
    if !idle.is_empty() {
        eprintln!("holding {} idle connections", idle.len());
    }
    let (report, capacity) = if args.find_capacity {
        let (r, c) = find_capacity(args).await?;
        (r, Some(c))
    } else {
        let config = args.run_config(args.mode())?;
        (measure(args, &config).await, None)
    };
    print!("{}", tts_loadtest::report::text(&report));
    if let Some(path) = &args.compare {
        let old: Report = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a tts-loadtest report", path.display()))?;
        print!("\n{}", tts_loadtest::report::compare(&old, &report));
    }
    if let Some(path) = &args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(c) = capacity {
            value["capacity"] = c;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        tts_loadtest::plot::svg(&report, path)?;
    }
    // No request completed: the service is not there (or refused all).
    Ok(if report.requests.completed == 0 {
        ExitCode::from(tts_telemetry::exit::UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
