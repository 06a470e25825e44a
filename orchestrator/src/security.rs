//! Who may open a WebSocket: the bearer token (header, or query parameter
//! when enabled) compared in constant time, and the browser `Origin`
//! against the allow-list. And towards the workers: the bearer token they
//! are sent. And TLS: the client listener's acceptor and the worker
//! channel's client settings, from PEM files.

use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq;
use tokio_rustls::TlsAcceptor;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::OrchestratorConfig;
use crate::error::OrchestratorError;

/// Why a handshake is refused: its HTTP status, the reason counted in
/// metrics, and the body.
pub(crate) type Refusal = (StatusCode, &'static str, &'static str);

/// Checks a WebSocket handshake's token and origin.
pub(crate) fn check_handshake(
    config: &OrchestratorConfig,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), Refusal> {
    if !origin_allowed(
        header_str(headers, header::ORIGIN),
        header_str(headers, header::HOST),
        &config.allowed_origins,
    ) {
        return Err((StatusCode::FORBIDDEN, "origin", "origin not allowed"));
    }
    let Some(expected) = &config.auth_token else {
        return Ok(());
    };
    let from_header =
        header_str(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    let from_query = config
        .auth_query_param
        .then(|| query_token(query?))
        .flatten();
    match from_header.or(from_query) {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "auth",
            "a valid bearer token is required",
        )),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `token` parameter of a query string (tokens are URL-safe; no
/// decoding is attempted).
fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// A request without `Origin` is not from a browser page: allowed. A
/// browser's is allowed when it is listed (or `*` is), or when it names the
/// host the request was sent to (the page came from this server).
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// The `authorization` metadata value for a worker token (`None` when the
/// token cannot be a header value).
pub(crate) fn bearer(token: Option<&str>) -> Option<MetadataValue<Ascii>> {
    format!("Bearer {}", token?).parse().ok()
}

fn tls_error(path: &Path, e: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Config(format!("{}: {e}", path.display()))
}

/// The client listener's TLS acceptor, when a certificate is configured.
pub(crate) fn acceptor(
    config: &OrchestratorConfig,
) -> Result<Option<TlsAcceptor>, OrchestratorError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| tls_error(cert, e))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// The worker channel's TLS settings, for an `https://` worker.
pub(crate) fn worker_tls(
    config: &OrchestratorConfig,
) -> Result<Option<ClientTlsConfig>, OrchestratorError> {
    let Some(ca) = &config.worker_ca else {
        return Ok(None);
    };
    let read = |path: &Path| std::fs::read(path).map_err(|e| tls_error(path, e));
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&config.worker_client_cert, &config.worker_client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn origins_are_same_host_or_listed() {
        let none: &[String] = &[];
        assert!(origin_allowed(None, Some("a:1"), none), "not a browser");
        assert!(origin_allowed(Some("http://a:1"), Some("a:1"), none));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("a:1"),
            none
        ));
        let listed = ["https://app.example".to_owned()];
        assert!(origin_allowed(
            Some("https://app.example"),
            Some("a:1"),
            &listed
        ));
        assert!(!origin_allowed(
            Some("https://other.example"),
            Some("a:1"),
            &listed
        ));
        assert!(origin_allowed(Some("null"), None, &["*".to_owned()]));
    }

    #[test]
    fn the_token_comes_from_the_header_or_if_enabled_the_query() {
        let mut config = OrchestratorConfig {
            auth_token: Some("t0k".into()),
            ..OrchestratorConfig::default()
        };
        let ok = headers(&[("authorization", "Bearer t0k")]);
        assert!(check_handshake(&config, &ok, None).is_ok());
        let wrong = headers(&[("authorization", "Bearer t0")]);
        assert_eq!(
            check_handshake(&config, &wrong, None).err().map(|r| r.1),
            Some("auth")
        );
        let empty = HeaderMap::new();
        assert!(check_handshake(&config, &empty, Some("token=t0k")).is_err());
        config.auth_query_param = true;
        assert!(check_handshake(&config, &empty, Some("a=1&token=t0k")).is_ok());
        assert!(check_handshake(&config, &empty, Some("token=nope")).is_err());
    }
}
