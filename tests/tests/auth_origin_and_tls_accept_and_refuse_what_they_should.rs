//! The security posture end to end, with certificates made in the test: a
//! client with the bearer token reaches the orchestrator over TLS (`wss://`)
//! and is served by a worker that takes only TLS with a client certificate
//! and its own token; a client without the token gets 401, a page from
//! another origin 403, plain `ws://` nothing; an orchestrator with the
//! wrong worker token or no client certificate gets `worker_unavailable`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tts_frame::{checksum, decode_frame};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{spawn_orchestrator, spawn_worker_on, worker_config};
use tts_worker::{ServerConfig, Worker};

/// PEM files of a CA, a server certificate for `localhost` and a client
/// certificate, all signed by the CA.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    let client_key = KeyPair::generate().expect("key");
    let mut client = CertificateParams::new(vec!["orchestrator".to_owned()]).expect("params");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client
        .signed_by(&client_key, &ca)
        .expect("client certificate");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A `wss://localhost:PORT/ws` connection trusting `ca`, with extra headers.
async fn wss(port: u16, ca: &Path, headers: &[(&str, &str)]) -> Result<Wss, WsError> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA");
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("a certificate")).expect("trusted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut request = format!("wss://localhost:{port}/ws").into_client_request()?;
    for (k, v) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .expect("name"),
            v.parse().expect("value"),
        );
    }
    let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
    Ok(ws)
}

/// The HTTP status a refused handshake got.
fn refused_with(result: Result<Wss, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

/// Speaks a sentence; returns its verified frames, or the error code.
async fn speak(ws: &mut Wss) -> Result<usize, String> {
    let msg = serde_json::json!({"type": "synthesize", "text": "Secure hello.", "request_id": "s"});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    let mut frames = 0;
    let read = async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Binary(b) => {
                    let (header, payload) = decode_frame(&b).expect("a frame");
                    assert_eq!(checksum(payload), header.crc32c);
                    frames += 1;
                }
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                    match v["type"].as_str() {
                        Some("end") => return Ok(frames),
                        Some("error") => return Err(v["code"].as_str().unwrap_or("").to_owned()),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Err("closed".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_origin_and_tls_accept_and_refuse_what_they_should() {
    let dir = std::env::temp_dir().join(format!("tts-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pki = pki(&dir);

    let server = ServerConfig {
        auth_token: Some("worker-secret".into()),
        tls_cert: Some(pki.server_cert.clone()),
        tls_key: Some(pki.server_key.clone()),
        tls_client_ca: Some(pki.ca.clone()),
        ..ServerConfig::default()
    };
    let config = worker_config();
    let worker = tokio::task::spawn_blocking(move || Worker::load(&config))
        .await
        .expect("join")
        .expect("worker loads")
        .with_server(server)
        .expect("server settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let worker = spawn_worker_on(worker, listener);
    let worker_url = format!("https://localhost:{}", worker.addr.port());
    let front = |worker_token: &str, client_cert: bool| OrchestratorConfig {
        auth_token: Some("client-secret".into()),
        tls_cert: Some(pki.server_cert.clone()),
        tls_key: Some(pki.server_key.clone()),
        worker_auth_token: Some(worker_token.into()),
        worker_ca: Some(pki.ca.clone()),
        worker_client_cert: client_cert.then(|| pki.client_cert.clone()),
        worker_client_key: client_cert.then(|| pki.client_key.clone()),
        ..OrchestratorConfig::default()
    };
    let pipeline = spawn_orchestrator(worker_url.clone(), front("worker-secret", true)).await;
    let port = pipeline.orchestrator.addr.port();
    let token = ("authorization", "Bearer client-secret");

    // With the token, over TLS, through a TLS worker that wants a client
    // certificate and its own token: served.
    let mut ws = wss(port, &pki.ca, &[token]).await.expect("accepted");
    assert!(speak(&mut ws).await.expect("served") > 10);
    // A page from this server's own origin is accepted too.
    let own = format!("https://localhost:{port}");
    wss(port, &pki.ca, &[token, ("origin", &own)])
        .await
        .expect("same origin");

    // Without the token, or with a wrong one: 401. Another origin: 403.
    assert_eq!(refused_with(wss(port, &pki.ca, &[]).await), 401);
    let wrong = ("authorization", "Bearer client-secre");
    assert_eq!(refused_with(wss(port, &pki.ca, &[wrong]).await), 401);
    let evil = ("origin", "http://evil.example");
    assert_eq!(refused_with(wss(port, &pki.ca, &[token, evil]).await), 403);
    // Plain WebSocket to the TLS listener gets nowhere.
    let plain = tts_tests::raw_ws(&format!("ws://127.0.0.1:{port}/ws"), None, &[token]).await;
    assert!(plain.is_err());
    pipeline.orchestrator.stop().await;

    // The worker refuses an orchestrator with the wrong token, or without
    // a client certificate: the client hears worker_unavailable.
    for (token_to_worker, client_cert) in [("nope", true), ("worker-secret", false)] {
        let pipeline =
            spawn_orchestrator(worker_url.clone(), front(token_to_worker, client_cert)).await;
        let mut ws = wss(pipeline.orchestrator.addr.port(), &pki.ca, &[token])
            .await
            .expect("accepted");
        assert_eq!(
            speak(&mut ws).await,
            Err("worker_unavailable".to_owned()),
            "token {token_to_worker:?}, client certificate {client_cert}"
        );
        pipeline.orchestrator.stop().await;
    }
    worker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
