//! `tts-pipeline`: a worker and an orchestrator in one process (see the
//! library).

use std::process::ExitCode;

use clap::Parser;
use tts_pipeline::PipelineCli;

#[tokio::main]
async fn main() -> ExitCode {
    match tts_pipeline::run(PipelineCli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tts-pipeline: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
