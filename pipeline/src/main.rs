//! `tts-pipeline`: a worker and an orchestrator in one process. The worker
//! serves gRPC on an ephemeral loopback port and the orchestrator relays to
//! it, so every frame still crosses a real gRPC hop. For demos, benchmarks
//! and small machines; deployments run `tts-worker` and `tts-orchestrator`.

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tts_telemetry::exit;
use tts_worker::{Worker, WorkerConfig};

/// Worker and orchestrator in one process.
#[derive(Debug, Parser)]
#[command(name = "tts-pipeline", version, about)]
struct PipelineCli {
    /// The orchestrator's flags (`--worker` is ignored: the embedded worker
    /// serves it).
    #[command(flatten)]
    front: tts_orchestrator::config::Cli,

    /// The worker's flags.
    #[command(flatten, next_help_heading = "Worker")]
    worker: WorkerConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = PipelineCli::parse();
    tts_worker::alloc::tune();
    // One fault registry for both halves: `/faults` on the admin listener
    // reaches the worker's faults too. (`/debug/pprof/profile` there
    // samples the whole process, the embedded worker included.)
    use tts_telemetry::faults::Component;
    let faults = cli
        .front
        .relay
        .admin
        .faults(&[Component::Orchestrator, Component::Worker]);
    let worker_config = WorkerConfig {
        max_text_chars: cli.front.relay.max_text_chars,
        faults: Some(faults.clone()),
        ..cli.worker.clone()
    };
    let metrics = match worker_config
        .validate()
        .and_then(|()| cli.front.init("tts-pipeline"))
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tts-pipeline: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    // The embedded worker's metrics are on the orchestrator's /metrics.
    let server = tts_worker::ServerConfig {
        metrics_url: Some(format!("http://{}/metrics", cli.front.admin_listen)),
        ..tts_worker::ServerConfig::default()
    };
    let loaded = tokio::task::spawn_blocking(move || {
        Worker::load(&worker_config).and_then(|w| w.with_server(server))
    });
    let worker = match loaded.await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            eprintln!("tts-pipeline: worker: {e}");
            let code = if e.is_configuration() {
                exit::CONFIG
            } else {
                exit::FAILURE
            };
            return ExitCode::from(code);
        }
        Err(e) => {
            eprintln!("tts-pipeline: loading the worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tts-pipeline: binding the worker's port: {e}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    match listener.local_addr() {
        Ok(addr) => cli.front.relay.workers = vec![format!("http://{addr}")],
        Err(e) => {
            eprintln!("tts-pipeline: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The worker keeps serving while the orchestrator drains; it ends with
    // the process.
    tokio::spawn(async move {
        if let Err(e) = worker.serve(listener, std::future::pending()).await {
            tracing::error!(error = %e, "embedded worker stopped");
        }
    });
    match cli.front.serve(metrics, Some(faults)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tts-pipeline: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::PipelineCli::command().debug_assert();
    }
}
