//! The connection: the handshake, sending requests and reading the
//! server's messages.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tts_protocol::{ClientMessage, Delivery, Encoding, ErrorCode, RequestOptions, ServerMessage};

use crate::collector::{Collector, Utterance};

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not open the connection (nothing listening, the handshake
    /// refused).
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The address tried.
        url: String,
        /// Why it failed.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The socket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered a request with `error`.
    #[error("server error {code}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The connection closed before the request ended.
    #[error("connection closed before the request ended")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// One message from the server.
#[derive(Debug, Clone)]
pub enum Event {
    /// A text message of the protocol (`tts-protocol`).
    Message(ServerMessage),
    /// A JSON text message this client does not know (from a newer
    /// server): passed on, not an error.
    Other(Value),
    /// A binary frame: its raw bytes and when it arrived.
    Frame(Bytes, Instant),
}

/// A deep ping's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepPong {
    /// Client → orchestrator → worker → client.
    pub rtt: Duration,
    /// The orchestrator's gRPC health round trip to the worker, µs.
    pub worker_rtt_us: Option<u64>,
    /// The worker's health: `SERVING`, `NOT_SERVING`, or the error.
    pub worker_status: Option<String>,
}

/// An open connection to the orchestrator.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The server's `ready` message.
    pub ready: ServerMessage,
    /// Longest wait for any one message before giving up.
    pub timeout: Duration,
}

/// What to synthesise.
#[derive(Debug, Clone, Default)]
pub struct SynthesizeOptions {
    /// Voice name; the server's default when `None`.
    pub voice: Option<String>,
    /// Request id; generated when `None`.
    pub request_id: Option<String>,
    /// Trace id; the server generates one when `None`.
    pub trace_id: Option<String>,
    /// Ask for frames as fast as synthesis allows (`"delivery":"fast"`)
    /// instead of on the playout clock.
    pub fast: bool,
    /// Speaking rate (`speed`, 0.25 to 4); the voice's own when `None`.
    pub speed: Option<f32>,
    /// Piper's `noise_scale` (0 to 1); the voice's own when `None`.
    pub noise_scale: Option<f32>,
    /// Piper's `noise_w` (0 to 1); the voice's own when `None`.
    pub noise_w: Option<f32>,
    /// Frame encoding; `pcm_s16le` when `None`.
    pub encoding: Option<Encoding>,
    /// Frame sample rate; the encoding's default when `None`.
    pub sample_rate: Option<u32>,
    /// Ask for word timestamps (`words` messages).
    pub timestamps: bool,
}

impl Client {
    /// Connects and waits for `ready`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Self::handshake(ws).await
    }

    /// Speaks the protocol over a TCP stream the caller connected (to set
    /// socket options such as a small receive buffer).
    pub async fn connect_over(url: &str, tcp: TcpStream) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(tcp),
            Some(ws_config()),
        )
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source,
        })?;
        Self::handshake(ws).await
    }

    async fn handshake(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ) -> Result<Self, ClientError> {
        let mut client = Self {
            ws,
            ready: ServerMessage::Ready {
                session_id: String::new(),
                protocol: 0,
                sample_rate: 0,
                channels: 0,
                frame_samples: 0,
                encoding: String::new(),
            },
            timeout: Duration::from_secs(30),
        };
        match client.next_event().await? {
            Event::Message(m @ ServerMessage::Ready { .. }) => client.ready = m,
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected ready, got {other:?}"
                )));
            }
        }
        Ok(client)
    }

    /// Sends a message of the protocol.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        self.ws.send(Message::text(message.to_json())).await?;
        Ok(())
    }

    /// Sends a JSON value as it is (for messages this client does not
    /// know, and tests of bad input).
    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.ws.send(Message::text(value.to_string())).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (for tests of bad input).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next text or binary message from the server.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let next = tokio::time::timeout(self.timeout, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(message) = ServerMessage::parse(t.as_str()) {
                        return Ok(Event::Message(message));
                    }
                    let v = serde_json::from_str(t.as_str())
                        .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))?;
                    return Ok(Event::Other(v));
                }
                Some(Ok(Message::Binary(b))) => return Ok(Event::Frame(b, Instant::now())),
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a `ping` and waits for its `pong`; returns the round-trip time.
    /// Other messages that arrive meanwhile are discarded.
    pub async fn ping(&mut self, id: u64) -> Result<Duration, ClientError> {
        Ok(self.ping_pong(id.into(), false).await?.rtt)
    }

    /// Sends a deep `ping` (answered after the orchestrator's gRPC health
    /// round trip to a worker) and waits for its `pong`. Other messages
    /// that arrive meanwhile are discarded.
    pub async fn deep_ping(&mut self, id: &str) -> Result<DeepPong, ClientError> {
        self.ping_pong(id.into(), true).await
    }

    /// Sends a `ping` with `id` and waits for the `pong` that echoes it.
    async fn ping_pong(&mut self, id: Value, deep: bool) -> Result<DeepPong, ClientError> {
        let sent = Instant::now();
        self.send(&ClientMessage::Ping {
            id: id.clone(),
            deep,
        })
        .await?;
        loop {
            if let Event::Message(ServerMessage::Pong {
                id: got,
                worker_rtt_us,
                worker_status,
                ..
            }) = self.next_event().await?
                && got == id
            {
                return Ok(DeepPong {
                    rtt: sent.elapsed(),
                    worker_rtt_us,
                    worker_status,
                });
            }
        }
    }

    /// Sends a `synthesize` request and returns its request id.
    pub async fn start(
        &mut self,
        text: &str,
        opts: &SynthesizeOptions,
    ) -> Result<String, ClientError> {
        let request_id = opts
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let options = opts.request_options(&request_id);
        self.send(&ClientMessage::synthesize(text, options)).await?;
        Ok(request_id)
    }

    /// Opens a context (streamed text input) and returns its request id;
    /// feed it with [`append`](Self::append), end it with
    /// [`close_context`](Self::close_context).
    pub async fn open_context(&mut self, opts: &SynthesizeOptions) -> Result<String, ClientError> {
        let request_id = opts
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let options = opts.request_options(&request_id);
        self.send(&ClientMessage::ContextOpen { options }).await?;
        Ok(request_id)
    }

    /// Appends a piece of text to a context.
    pub async fn append(&mut self, request_id: &str, text: &str) -> Result<(), ClientError> {
        self.send(&ClientMessage::Append {
            request_id: request_id.to_owned(),
            text: text.to_owned(),
        })
        .await
    }

    /// Ends a context's text: its `end` follows its last audio.
    pub async fn close_context(&mut self, request_id: &str) -> Result<(), ClientError> {
        self.send(&ClientMessage::Close {
            request_id: request_id.to_owned(),
        })
        .await
    }

    /// Synthesises `text` and collects its audio, verifying every frame.
    pub async fn synthesize(
        &mut self,
        text: &str,
        opts: &SynthesizeOptions,
    ) -> Result<Utterance, ClientError> {
        let sent = Instant::now();
        let request_id = self.start(text, opts).await?;
        self.collect(Collector::new(request_id, sent)).await
    }

    /// Feeds server messages to `collector` until its request ends.
    pub async fn collect(&mut self, mut collector: Collector) -> Result<Utterance, ClientError> {
        loop {
            let event = self.next_event().await?;
            if let Some(done) = collector.on_event(event)? {
                return Ok(done);
            }
        }
    }
}

impl SynthesizeOptions {
    /// The options as a `synthesize` or `context_open` message carries
    /// them, under `request_id`.
    pub fn request_options(&self, request_id: &str) -> RequestOptions {
        RequestOptions {
            request_id: Some(request_id.to_owned()),
            trace_id: self.trace_id.clone(),
            voice: self.voice.clone(),
            delivery: if self.fast {
                Delivery::Fast
            } else {
                Delivery::Realtime
            },
            speed: self.speed,
            noise_scale: self.noise_scale,
            noise_w: self.noise_w,
            encoding: self.encoding,
            sample_rate: self.sample_rate,
            timestamps: self.timestamps,
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}
