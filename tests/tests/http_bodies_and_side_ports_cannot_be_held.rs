//! The HTTP side holds like the WebSocket side: a speech request whose
//! body trickles is answered 408 and closed, one that declares a body
//! over the limit is answered 413 before a byte of it is read, a client
//! that stops reading its audio loses its connection, and idle keep-alive
//! connections are closed. The side ports (the orchestrator's admin
//! listener, the worker's metrics listener) have caps and timeouts of
//! their own: holding them full keeps no one out for long, and the client
//! listener keeps serving meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tts_tests::{LONG_TEXT, ServiceProcess, eventually, http_get, metric};

/// Reads until the server closes `tcp` (EOF or a reset) or `limit`
/// passes: what arrived, and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn status(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// The headers of a speech request declaring `length` body bytes.
fn speech_head(addr: SocketAddr, length: u64) -> String {
    format!(
        "POST /v1/audio/speech HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_and_side_ports_cannot_be_held() {
    let side = ["--admin-max-connections", "4", "--admin-timeout-secs", "2"];
    let worker = ServiceProcess::worker(&side).await;
    let orchestrator = ServiceProcess::orchestrator(
        &format!("http://{}", worker.addr),
        &[
            &side[..],
            &[
                "--body-timeout-secs",
                "2",
                "--write-timeout-secs",
                "2",
                "--handshake-timeout-secs",
                "2",
            ],
        ]
        .concat(),
    )
    .await;
    let (addr, admin) = (orchestrator.addr, orchestrator.admin);

    // A body that trickles one byte every half second: 408 once the body
    // time is up, and the connection closed.
    let body = r#"{"model":"tts-1","input":"Hello there.","voice":"alloy"}"#;
    let mut trickle = TcpStream::connect(addr).await.expect("connect");
    let head = speech_head(addr, body.len() as u64);
    trickle.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut answer = String::new();
    for byte in body.bytes() {
        if trickle.write_all(&[byte]).await.is_err() {
            break;
        }
        let (got, closed) = read_until_closed(&mut trickle, Duration::from_millis(500)).await;
        answer.push_str(&got);
        if closed {
            break;
        }
    }
    assert_eq!(status(&answer), Some(408), "{answer}");
    assert!(answer.contains("did not arrive within 2 s"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "still reading after {:?}",
        started.elapsed()
    );

    // A declared length far over the limit, with 3 bytes sent: 413 at
    // once, not after waiting for the rest.
    let mut greedy = TcpStream::connect(addr).await.expect("connect");
    let head = speech_head(addr, 99_999_999_999);
    greedy.write_all(head.as_bytes()).await.expect("write");
    greedy.write_all(b"{\"i").await.expect("write");
    let (answer, closed) = read_until_closed(&mut greedy, Duration::from_secs(1)).await;
    assert_eq!(status(&answer), Some(413), "{answer}");
    assert!(closed, "the connection stays open after a 413");
    assert!(
        metric(
            admin,
            "tts_orchestrator_connections_refused_total{reason=\"body_too_large\"}"
        )
        .await
            >= 1.0
    );

    // A client that asks for a long text and never reads: once its socket
    // has taken nothing for the write timeout, its connection is closed.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut deaf = socket.connect(addr).await.expect("connect");
    let json = format!(r#"{{"model":"tts-1","input":"{LONG_TEXT}","voice":"alloy"}}"#);
    let request = format!("{}{json}", speech_head(addr, json.len() as u64));
    deaf.write_all(request.as_bytes()).await.expect("write");
    let closed_by_server = eventually(Duration::from_secs(30), || async {
        metric(
            admin,
            "tts_orchestrator_connections_refused_total{reason=\"write_timeout\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert!(
        closed_by_server,
        "the deaf client's connection is still open"
    );
    let (_, closed) = read_until_closed(&mut deaf, Duration::from_secs(5)).await;
    assert!(closed, "the deaf client can still read after the close");

    // An idle keep-alive connection is closed after the header timeout.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let get = format!("GET /v1/models HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    idle.write_all(get.as_bytes()).await.expect("write");
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(status(&answer), Some(200), "{answer}");
    assert!(closed, "an idle keep-alive connection stays open");

    // The side ports: each holds 4 connections; the fifth is closed at
    // once, the held ones after their header timeout, and then the port
    // answers again. The client listener serves throughout.
    for (port, refused) in [
        (admin, "tts_admin_connections_refused_total"),
        (worker.admin, "tts_admin_connections_refused_total"),
    ] {
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut tcp = TcpStream::connect(port).await.expect("connect");
            tcp.write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .expect("write");
            held.push(tcp);
        }
        let mut fifth = TcpStream::connect(port).await.expect("connect");
        let (_, closed) = read_until_closed(&mut fifth, Duration::from_millis(500)).await;
        assert!(closed, "{port}: a fifth connection is served over the cap");
        let (code, _) = http_get(addr, "/v1/models").await;
        assert_eq!(code, 200, "the client listener stops serving");
        for tcp in &mut held {
            let (_, closed) = read_until_closed(tcp, Duration::from_secs(5)).await;
            assert!(closed, "{port}: a half-sent request is held open");
        }
        let (code, exposition) = http_get(port, "/metrics").await;
        assert_eq!(code, 200, "{port} answers again");
        let counted = |reason: &str| {
            tts_tests::sample(&exposition, &format!("{refused}{{reason=\"{reason}\"}}"))
        };
        assert!(counted("capacity") >= 1.0, "{port}: {exposition}");
        assert!(counted("handshake_timeout") >= 4.0, "{port}: {exposition}");
    }
}
