//! `tts-orchestrator`: the WebSocket front end.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tts_orchestrator::Orchestrator;
use tts_orchestrator::config::Cli;
use tts_worker::Worker;

/// How long requests in flight may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let worker_config = tts_worker::WorkerConfig {
        max_text_chars: cli.relay.max_text_chars,
        ..cli.worker.clone()
    };
    let checks = [
        cli.relay.validate(),
        if cli.embedded_worker {
            worker_config.validate()
        } else {
            Ok(())
        },
        tts_telemetry::init_logging(
            &cli.log_format,
            cli.otlp_endpoint.as_deref(),
            "tts-orchestrator",
        ),
    ];
    if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
        eprintln!("tts-orchestrator: {e}");
        std::process::exit(64);
    }
    if cli.embedded_worker {
        let worker = match tokio::task::spawn_blocking(move || Worker::load(&worker_config)).await?
        {
            Ok(w) => w,
            Err(e) => {
                eprintln!("tts-orchestrator: embedded worker: {e}");
                std::process::exit(1);
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        cli.relay.worker_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = worker.serve(listener, std::future::pending()).await {
                tracing::error!(error = %e, "embedded worker stopped");
            }
        });
    }
    let metrics = tts_telemetry::install_metrics().map_err(anyhow::Error::msg)?;
    let orchestrator = Orchestrator::new(cli.relay)?.with_metrics(metrics);
    let ws = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let admin = TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("binding {}", cli.admin_listen))?;
    let served = orchestrator
        .serve(ws, admin, tts_telemetry::signal::shutdown(), SHUTDOWN_GRACE)
        .await;
    tts_telemetry::otel::shutdown();
    served?;
    Ok(())
}
