//! `tts-orchestrator`: the WebSocket front end.

use std::process::ExitCode;

use clap::Parser;
use tts_orchestrator::config::Cli;
use tts_telemetry::exit;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let metrics = match cli.init("tts-orchestrator") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tts-orchestrator: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    match tts_orchestrator::run(cli, metrics, None).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tts-orchestrator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
