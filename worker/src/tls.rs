//! TLS for the worker's gRPC server, from PEM files.

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::ServerConfig;
use crate::error::WorkerError;

fn read(path: &std::path::Path) -> Result<Vec<u8>, WorkerError> {
    std::fs::read(path).map_err(|source| WorkerError::Tls {
        path: path.display().to_string(),
        source,
    })
}

/// `builder` with TLS when a certificate is configured (and client
/// certificates required when a client CA is), else as it is.
pub(crate) fn configure(builder: Server, server: &ServerConfig) -> Result<Server, WorkerError> {
    let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) else {
        return Ok(builder);
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &server.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(builder.tls_config(tls)?)
}
