//! `tts-worker`: the gRPC speech worker.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tts_worker::Worker;
use tts_worker::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tts_worker::alloc::tune();
    let config = cli.config();
    let checks = [
        config.validate(),
        cli.server.validate(),
        tts_telemetry::init_logging(&cli.log_format, cli.otlp_endpoint.as_deref(), "tts-worker"),
    ];
    if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
        eprintln!("tts-worker: {e}");
        std::process::exit(64);
    }
    let metrics = tts_telemetry::install_metrics().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let metrics_listener = TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("binding {}", cli.metrics_listen))?;
    tokio::spawn(tts_telemetry::serve_metrics(
        metrics_listener,
        metrics,
        tts_telemetry::signal::shutdown(),
    ));
    let worker = Worker::new(config)?.with_server(cli.server.clone())?;
    if let Err(e) = worker
        .serve(listener, tts_telemetry::signal::shutdown())
        .await
    {
        eprintln!("tts-worker: {e}");
        std::process::exit(1);
    }
    Ok(())
}
