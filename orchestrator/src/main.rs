//! `tts-orchestrator`: the WebSocket front end.

use std::process::ExitCode;

use clap::Parser;
use tts_orchestrator::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let metrics = match cli.init("tts-orchestrator") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tts-orchestrator: {e}");
            return ExitCode::from(64);
        }
    };
    match cli.serve(metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tts-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}
