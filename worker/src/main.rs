//! `tts-worker`: the gRPC speech worker.

use anyhow::Context;
use clap::Parser;
use tts_worker::Worker;
use tts_worker::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config();
    if let Err(e) = config.validate() {
        eprintln!("tts-worker: {e}");
        std::process::exit(64);
    }
    tts_worker::telemetry::init_logging(&cli.log_format).map_err(anyhow::Error::msg)?;
    let worker = match tokio::task::spawn_blocking(move || Worker::load(&config)).await? {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tts-worker: {e}");
            std::process::exit(1);
        }
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    worker
        .serve(listener, tts_worker::signal::shutdown())
        .await?;
    Ok(())
}
