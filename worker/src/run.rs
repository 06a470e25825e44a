//! The `tts-worker` binary's work, from parsed flags to exit: every flag
//! is checked before a port is bound, then the metrics listener (with
//! fault injection and profiles when allowed) and the gRPC server run
//! until SIGTERM or SIGINT.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::{Cli, ServerConfig};
use crate::error::WorkerError;
use crate::{Worker, alloc};

/// Runs a worker as the command line says, until a shutdown signal has
/// drained it. The error says which exit code it is
/// ([`WorkerError::exit_code`]).
pub async fn run(cli: Cli) -> Result<(), WorkerError> {
    alloc::tune();
    let config = cli.config();
    // Every check runs (logging is set up even when a flag is wrong); the
    // first failure is the one reported.
    let checks = [
        config.validate(),
        cli.admin.validate(),
        tts_telemetry::init_logging(&cli.log_format, cli.otlp_endpoint.as_deref(), "tts-worker"),
    ];
    if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
        return Err(WorkerError::Flag(e));
    }
    let metrics = tts_telemetry::install_metrics().map_err(WorkerError::Metrics)?;
    let listener = bind(cli.listen).await?;
    let metrics_listener = bind(cli.metrics_listen).await?;
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
        cli.admin.limits(),
        tts_telemetry::signal::shutdown(),
    ));
    // The registry says where this worker is: where it listens, unless
    // that is a wildcard address or told otherwise.
    let advertise = match listener.local_addr() {
        Ok(addr) if !addr.ip().is_unspecified() => Some(format!("http://{addr}")),
        _ => None,
    };
    let server = ServerConfig {
        metrics_url: Some(format!("http://{}/metrics", cli.metrics_listen)),
        advertise_url: cli.server.advertise_url.clone().or(advertise),
        ..cli.server.clone()
    };
    Worker::new(config)?
        .with_server(server)?
        .serve(listener, tts_telemetry::signal::shutdown())
        .await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, WorkerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WorkerError::Bind { addr, source })
}
