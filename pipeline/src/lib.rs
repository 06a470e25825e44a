//! A worker and an orchestrator in one process. The worker serves gRPC on
//! an ephemeral loopback port and the orchestrator relays to it, so every
//! frame still crosses a real gRPC hop. For demos, benchmarks and small
//! machines; deployments run `tts-worker` and `tts-orchestrator`.

use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;
use tts_telemetry::exit;
use tts_telemetry::faults::Component;
use tts_worker::{Worker, WorkerConfig};

/// Worker and orchestrator in one process.
///
/// The worker serves gRPC on a loopback port of its own, chosen at start-up; its metrics are on the
/// admin listener's `/metrics` (`--admin-listen`) with the orchestrator's,
/// one process, so there is no separate worker metrics address.
#[derive(Debug, Parser)]
#[command(name = "tts-pipeline", version, after_help = tts_telemetry::exit::help())]
// The embedded worker serves the orchestrator, on a loopback port of its
// own: the orchestrator's `--worker` would be ignored, so it is not offered.
#[command(mut_arg("workers", |a| a.hide(true)))]
pub struct PipelineCli {
    /// The orchestrator's flags, but for `--worker`: the embedded worker
    /// serves it.
    #[command(flatten)]
    pub front: tts_orchestrator::config::Cli,

    /// The worker's flags.
    #[command(flatten, next_help_heading = "Worker")]
    pub worker: WorkerConfig,
}

/// Why the pipeline did not start or stopped: what to say, and the
/// process exit code.
#[derive(Debug)]
pub struct PipelineError {
    message: String,
    exit_code: u8,
}

impl PipelineError {
    fn new(exit_code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code,
        }
    }

    /// The process exit code: 64 for the configuration, 69 for a port
    /// that cannot be bound, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PipelineError {}

/// Checks the flags, loads the worker, serves it on a loopback port and
/// serves the orchestrator in front of it until SIGTERM or SIGINT.
pub async fn run(mut cli: PipelineCli) -> Result<(), PipelineError> {
    tts_worker::alloc::tune();
    // One fault registry for both halves: `/faults` on the admin listener
    // reaches the worker's faults too. (`/debug/pprof/profile` there
    // samples the whole process, the embedded worker included.)
    let faults = cli
        .front
        .relay
        .admin
        .faults(&[Component::Orchestrator, Component::Worker]);
    let worker_config = WorkerConfig {
        max_text_chars: cli.front.relay.max_text_chars,
        faults: Some(Arc::clone(&faults)),
        ..cli.worker.clone()
    };
    let metrics = worker_config
        .validate()
        .and_then(|()| cli.front.init("tts-pipeline"))
        .map_err(|e| PipelineError::new(exit::CONFIG, e))?;
    let worker = load(worker_config, &cli).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
        PipelineError::new(exit::UNAVAILABLE, format!("binding the worker's port: {e}"))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| PipelineError::new(exit::FAILURE, e.to_string()))?;
    cli.front.relay.workers = vec![format!("http://{addr}")];
    // The worker keeps serving while the orchestrator drains; it ends with
    // the process.
    tokio::spawn(async move {
        if let Err(e) = worker.serve(listener, std::future::pending()).await {
            tracing::error!(error = %e, "embedded worker stopped");
        }
    });
    tts_orchestrator::run(cli.front, metrics, Some(faults))
        .await
        .map_err(|e| PipelineError::new(e.exit_code(), e.to_string()))
}

/// Loads the worker's voices (off the async threads); its metrics are on
/// the orchestrator's `/metrics`.
async fn load(config: WorkerConfig, cli: &PipelineCli) -> Result<Worker, PipelineError> {
    let server = tts_worker::ServerConfig {
        metrics_url: Some(format!("http://{}/metrics", cli.front.admin_listen)),
        ..tts_worker::ServerConfig::default()
    };
    let loaded = tokio::task::spawn_blocking(move || {
        Worker::load(&config).and_then(|w| w.with_server(server))
    });
    match loaded.await {
        Ok(Ok(worker)) => Ok(worker),
        Ok(Err(e)) => {
            let code = if e.is_configuration() {
                exit::CONFIG
            } else {
                exit::FAILURE
            };
            Err(PipelineError::new(code, format!("worker: {e}")))
        }
        Err(e) => Err(PipelineError::new(
            exit::FAILURE,
            format!("loading the worker: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::PipelineCli::command().debug_assert();
    }

    #[test]
    fn help_offers_no_worker_address_the_pipeline_would_ignore() {
        let help = super::PipelineCli::command().render_long_help().to_string();
        assert!(!help.contains("--worker <"), "{help}");
        assert!(!help.contains("--metrics-listen"), "{help}");
        assert!(
            help.contains("its metrics are on the admin listener's `/metrics`"),
            "{help}"
        );
        assert!(
            help.contains("--synthesis-threads"),
            "the worker's own flags stay"
        );
    }
}
