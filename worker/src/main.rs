//! `tts-worker`: the gRPC speech worker.

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tts_telemetry::exit;
use tts_worker::Worker;
use tts_worker::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tts_worker::alloc::tune();
    let config = cli.config();
    let checks = [
        config.validate(),
        cli.admin.validate(),
        tts_telemetry::init_logging(&cli.log_format, cli.otlp_endpoint.as_deref(), "tts-worker"),
    ];
    if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
        return fail(exit::CONFIG, e);
    }
    let metrics = match tts_telemetry::install_metrics() {
        Ok(m) => m,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let (listener, metrics_listener) = match (
        TcpListener::bind(cli.listen).await,
        TcpListener::bind(cli.metrics_listen).await,
    ) {
        (Ok(l), Ok(m)) => (l, m),
        (Err(e), _) => return fail(exit::UNAVAILABLE, format!("binding {}: {e}", cli.listen)),
        (_, Err(e)) => {
            return fail(
                exit::UNAVAILABLE,
                format!("binding {}: {e}", cli.metrics_listen),
            );
        }
    };
    // Fault injection (chaos experiments) and CPU profiles beside the
    // metrics, when allowed.
    let admin = config
        .faults
        .clone()
        .map(tts_telemetry::faults::routes)
        .unwrap_or_default()
        .merge(tts_telemetry::profile::routes(&cli.admin));
    tokio::spawn(tts_telemetry::serve_metrics(
        metrics_listener,
        metrics,
        admin,
        tts_telemetry::signal::shutdown(),
    ));
    // The registry says where this worker is: where it listens, unless
    // that is a wildcard address or told otherwise.
    let advertise = match listener.local_addr() {
        Ok(addr) if !addr.ip().is_unspecified() => Some(format!("http://{addr}")),
        _ => None,
    };
    let server = tts_worker::ServerConfig {
        metrics_url: Some(format!("http://{}/metrics", cli.metrics_listen)),
        advertise_url: cli.server.advertise_url.clone().or(advertise),
        ..cli.server.clone()
    };
    let served = match Worker::new(config).and_then(|w| w.with_server(server)) {
        Ok(worker) => {
            worker
                .serve(listener, tts_telemetry::signal::shutdown())
                .await
        }
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is_configuration() {
                exit::CONFIG
            } else {
                exit::FAILURE
            };
            fail(code, e)
        }
    }
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("tts-worker: {e}");
    ExitCode::from(code)
}
