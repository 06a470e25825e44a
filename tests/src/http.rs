//! Plain HTTP on loopback (no client library between the test and the
//! bytes), and reading Prometheus expositions.

use std::net::SocketAddr;
use std::time::Duration;

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// What an HTTP request got back.
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The header block, as sent.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
    /// From sending the request to the first byte of the body.
    pub first_body_byte: Duration,
}

/// A plain HTTP/1.0 POST of a JSON body on loopback (the server then
/// streams the body and closes, with no chunked framing to undo).
pub async fn http_post(addr: SocketAddr, path: &str, json: &str, headers: &[&str]) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n{json}",
        json.len()
    );
    let sent = std::time::Instant::now();
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut first_body_byte = None;
    let mut buf = [0u8; 16 * 1024];
    let limit = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(limit, tcp.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_body_byte.is_none()
            && let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && raw.len() > at + 4
        {
            first_body_byte = Some(sent.elapsed());
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
        first_body_byte: first_body_byte.unwrap_or_default(),
    }
}

/// The value of one sample in a Prometheus exposition: `series` is the
/// metric name with its labels exactly as rendered, e.g.
/// `x_total{a="b"}`. Missing series read as 0.
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs `promtool check metrics` on an exposition; panics with its output
/// when it objects. promtool comes from `scripts/setup.sh --test`.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/setup.sh --test)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
