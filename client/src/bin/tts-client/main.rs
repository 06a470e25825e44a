//! `tts-client`: speak text through the orchestrator, verify every frame,
//! write a WAV and report what was measured.

mod doctor;
mod say;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tts_client::DEFAULT_URL;
use tts_telemetry::exit;

#[derive(Parser)]
#[command(
    name = "tts-client",
    version,
    about = "Client for the TTS orchestrator"
)]
struct Cli {
    /// Orchestrator WebSocket URL (default `ws://127.0.0.1:8080/ws`; `doctor
    /// health` finds it through the orchestrator).
    #[arg(long, global = true, env = "TTS_URL")]
    url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesise text and save it as a WAV file.
    Say(say::SayArgs),
    /// Diagnose a running system (exit code 69 when a service is unhealthy,
    /// 65 when audio fails its checks).
    Doctor {
        #[command(subcommand)]
        command: doctor::DoctorCommand,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = cli.url.clone();
    let default_url = url.is_none();
    let result = match cli.command {
        Command::Say(args) => say::run(url.as_deref().unwrap_or(DEFAULT_URL), args).await,
        Command::Doctor { command, json } => doctor::run(url, command, json).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tts-client: {}", error_chain(&e));
            if default_url && connect_failed(&e) {
                eprintln!(
                    "tts-client: nothing answered at the default {DEFAULT_URL}; \
                     --url (or TTS_URL) names the orchestrator's WebSocket"
                );
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code for an error: the client's mistakes (as the server
/// judged them) are bad data; anything that means the service is not
/// there or not taking work is unavailable.
fn exit_code(e: &anyhow::Error) -> u8 {
    use tts_client::ClientError;
    use tts_protocol::Outcome;
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Server { code, .. }) => match code.outcome() {
            Outcome::ClientError => exit::DATA,
            _ => exit::UNAVAILABLE,
        },
        Some(
            ClientError::Connect { .. }
            | ClientError::WebSocket(_)
            | ClientError::Closed
            | ClientError::Timeout(_),
        ) => exit::UNAVAILABLE,
        Some(ClientError::Protocol(_)) | None => exit::FAILURE,
    }
}

/// Whether the error is a connection that could not be opened.
fn connect_failed(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<tts_client::ClientError>(),
        Some(tts_client::ClientError::Connect { .. })
    )
}

/// The error and its causes, each said once (some causes repeat their
/// source's text in their own).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
