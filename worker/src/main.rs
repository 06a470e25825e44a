//! `tts-worker`: the gRPC speech worker.

use anyhow::Context;
use clap::Parser;
use tts_worker::Worker;
use tts_worker::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(e) = cli.worker.validate() {
        eprintln!("tts-worker: {e}");
        std::process::exit(64);
    }
    tts_worker::telemetry::init_logging(&cli.log_format).map_err(anyhow::Error::msg)?;
    let config = cli.worker.clone();
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
    worker.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
