//! WebSocket clients below the client library (raw sockets with small
//! buffers and extra headers), and ordinary traffic through it.

use std::net::SocketAddr;

/// A raw WebSocket to `url` whose kernel receive buffer is `recv_buffer`
/// bytes (small, to stand for a client that reads nothing), with extra
/// handshake headers.
pub async fn raw_ws(
    url: &str,
    recv_buffer: Option<u32>,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let addr: SocketAddr = host.parse().map_err(|_| {
        tokio_tungstenite::tungstenite::Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::NoHostName,
        )
    })?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(ws)
}

/// The next text message as JSON, or the close frame's code, from a raw
/// WebSocket; frames are skipped. `None` when the stream ends without a
/// close frame.
pub async fn next_text_or_close(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Result<serde_json::Value, u16>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                return Some(Ok(serde_json::from_str(t.as_str()).unwrap_or_default()));
            }
            Ok(Message::Close(frame)) => return Some(Err(frame.map_or(1005, |f| f.code.into()))),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Serves ordinary traffic through the WebSocket at `ws_url`, so that
/// what is checked next sees a pipeline after real use, not a fresh one:
/// requests in each encoding (PCM, µ-law at 8 kHz, Opus), fast and real
/// time, and one refused request (empty text). Every frame must verify.
/// Returns the frames received.
pub async fn serve_traffic(ws_url: &str) -> usize {
    use tts_client::{Client, Encoding, SynthesizeOptions};
    let mut client = Client::connect(ws_url).await.expect("connect");
    let requests = [
        (Encoding::PcmS16le, true, "Traffic first, then diagnostics."),
        (Encoding::Mulaw, true, "A telephone line hears this."),
        (Encoding::Opus, true, "Compressed speech travels light."),
        (Encoding::PcmS16le, false, "Real time."),
    ];
    let mut frames = 0;
    for (encoding, fast, text) in requests {
        let opts = SynthesizeOptions {
            encoding: Some(encoding),
            fast,
            ..SynthesizeOptions::default()
        };
        let utterance = client.synthesize(text, &opts).await.expect("speech");
        assert_eq!(
            utterance.report.integrity_failures(),
            0,
            "{encoding:?}: every frame verifies"
        );
        frames += utterance.frames.len().max(utterance.report.frames as usize);
    }
    let refused = client
        .synthesize("   ", &SynthesizeOptions::default())
        .await;
    assert!(refused.is_err(), "empty text is refused");
    frames
}
