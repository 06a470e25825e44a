//! `tts-worker`: the gRPC speech worker.

use std::process::ExitCode;

use clap::Parser;
use tts_worker::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    match tts_worker::run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tts-worker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
