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
    about = "Client for the TTS orchestrator",
    after_help = exit::help()
)]
struct Cli {
    #[command(flatten)]
    url: UrlArg,

    #[command(subcommand)]
    command: Command,
}

/// `--url`: given before the subcommand, or after it to the subcommands
/// that speak to the orchestrator's WebSocket (`say`, `doctor why`,
/// `health`, `rtt`, `frames`); the later one wins.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct UrlArg {
    /// Orchestrator WebSocket URL (default `ws://127.0.0.1:8080/ws`; `doctor
    /// health` and `doctor why` find it through the orchestrator).
    #[arg(long = "url", env = "TTS_URL")]
    pub(crate) url: Option<String>,
}

impl UrlArg {
    /// This one, or `outer` (the one before the subcommand).
    pub(crate) fn or(self, outer: &UrlArg) -> Option<String> {
        self.url.or_else(|| outer.url.clone())
    }
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
    let (result, default_url) = match cli.command {
        Command::Say(mut args) => {
            let url = std::mem::take(&mut args.url).or(&cli.url);
            let default_url = url.is_none();
            let url = url.as_deref().unwrap_or(DEFAULT_URL).to_owned();
            (say::run(&url, args).await, default_url)
        }
        Command::Doctor { command, json } => {
            let default_url = cli.url.url.is_none() && !command.names_url();
            (doctor::run(&cli.url, command, json).await, default_url)
        }
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
