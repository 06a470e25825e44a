//! Accepting HTTP connections, on every listener of both processes: the
//! orchestrator's client listener (WebSocket, speech endpoint, page), its
//! admin listener and the worker's metrics listener. Every TCP connection
//! holds a [`Ticket`] from the moment it is accepted until it closes,
//! WebSocket life included: a permit of the listener's connection cap (so
//! connections that never finish their handshake count too, and a
//! shutdown's drain ends when the last ticket is dropped) and a place in
//! its address's share. Request headers must arrive within the header
//! timeout, which also ends a keep-alive connection left idle that long;
//! a socket that accepts no bytes for the write timeout is closed (a
//! client that stopped reading), WebSocket life included. Then HTTP/1.1
//! is served with upgrades.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Connections the admin and metrics listeners refused or closed, by
/// `reason` (see [`Refused`]).
pub const ADMIN_CONNECTIONS_REFUSED: &str = "tts_admin_connections_refused_total";

/// Bounds on one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TCP connections open at once, handshakes included.
    pub connections: usize,
    /// TCP connections open at once from one client address.
    pub per_address: usize,
    /// Time for a client to send its request headers (and the longest a
    /// keep-alive connection may sit idle between requests).
    pub header_timeout: Duration,
    /// Longest a socket may accept no bytes while the server has some to
    /// send.
    pub write_timeout: Duration,
    /// Kernel send buffer of each socket, bytes (`None`: the system's).
    pub send_buffer: Option<usize>,
}

/// Why a connection was refused or closed by the server, as the
/// `reason` label of the listener's refusal counter.
pub type Refused = &'static str;

/// The process's soft file-descriptor limit less `reserve`: the most
/// connections a listener may hold and still leave the rest of the process
/// its descriptors.
pub fn descriptors_less(reserve: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(reserve as u64))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Describes the admin listeners' refusal counter, at zero for each
/// reason, so that it exists before the first refusal.
pub fn describe() {
    metrics::describe_counter!(
        ADMIN_CONNECTIONS_REFUSED,
        metrics::Unit::Count,
        "Connections the admin or metrics listener refused or closed, by reason (capacity, handshake_timeout, write_timeout)"
    );
    for reason in ["capacity", "handshake_timeout", "write_timeout"] {
        metrics::counter!(ADMIN_CONNECTIONS_REFUSED, "reason" => reason).absolute(0);
    }
}

/// Counts a refusal on an admin or metrics listener.
pub fn admin_refused(reason: Refused) {
    metrics::counter!(ADMIN_CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// The connections open now, by client address.
#[derive(Debug, Default)]
struct Addresses(Mutex<HashMap<IpAddr, usize>>);

impl Addresses {
    /// Counts one more connection from `ip` unless it already has `max`.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressGuard> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressGuard(Arc::clone(self), ip))
    }
}

struct AddressGuard(Arc<Addresses>, IpAddr);

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// What one open connection holds; dropped when the connection (and its
/// WebSocket session, if it upgraded) ends. Handlers find it in the
/// request's extensions and keep it for the session.
#[derive(Clone)]
pub struct Ticket(#[allow(dead_code)] Arc<(OwnedSemaphorePermit, AddressGuard)>);

/// A listener's connection cap, shared with the shutdown drain, and the
/// counter its refusals go to.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    addresses: Arc<Addresses>,
    limits: Limits,
    refused: fn(Refused),
}

impl Gate {
    /// A gate with these limits whose refusals (and server-side closes)
    /// `refused` counts.
    pub fn new(limits: Limits, refused: fn(Refused)) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.connections)),
            addresses: Arc::default(),
            limits,
            refused,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.connections - self.permits.available_permits()
    }

    /// Waits until every connection has closed (every ticket dropped).
    pub async fn closed(&self) {
        let all = u32::try_from(self.limits.connections).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }

    fn admit(&self, peer: SocketAddr) -> Result<Ticket, &'static str> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| "capacity")?;
        let address = self
            .addresses
            .enter(peer.ip(), self.limits.per_address)
            .ok_or("per_address")?;
        Ok(Ticket(Arc::new((permit, address))))
    }
}

/// Accepts connections on `listener` and serves `router` on each until
/// `stop` is cancelled; connections already open are left to finish (the
/// caller waits on [`Gate::closed`]), a keep-alive one after its current
/// request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    gate: Gate,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ticket = match gate.admit(peer) {
            Ok(t) => t,
            Err(reason) => {
                (gate.refused)(reason);
                debug!(%peer, reason, "connection refused");
                drop(tcp);
                continue;
            }
        };
        tune(&tcp, gate.limits.send_buffer);
        let (router, stop, gate) = (router.clone(), stop.clone(), gate.clone());
        let handshake = gate.limits.header_timeout;
        match tls.clone() {
            None => {
                tokio::spawn(connection(tcp, peer, router, ticket, gate, stop));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    // The TLS handshake counts against the header timeout.
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, peer, router, ticket, gate, stop).await,
                        Ok(Err(e)) => {
                            (gate.refused)("tls");
                            debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => (gate.refused)("handshake_timeout"),
                    }
                });
            }
        }
    }
}

fn tune(tcp: &TcpStream, send_buffer: Option<usize>) {
    let _ = tcp.set_nodelay(true);
    if let Some(bytes) = send_buffer
        && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes)
    {
        warn!(error = %e, "cannot set the socket send buffer");
    }
}

/// Serves one connection: HTTP/1.1 with upgrades, headers within the
/// header timeout, no write stuck longer than the write timeout; on
/// shutdown, a keep-alive connection closes after its current request.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    ticket: Ticket,
    gate: Gate,
    stop: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut io = TimeoutStream::new(io);
    io.set_write_timeout(Some(gate.limits.write_timeout));
    // A header timeout before the first request is a handshake that never
    // finished; after it, an idle keep-alive connection closed.
    let served = Arc::new(AtomicBool::new(false));
    let service = hyper::service::service_fn({
        let served = Arc::clone(&served);
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            served.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(ticket.clone());
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits.header_timeout)
        .serve_connection(TokioIo::new(Box::pin(io)), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        let reason = if e.is_timeout() && !served.load(Ordering::Relaxed) {
            Some("handshake_timeout")
        } else if is_write_timeout(&e) {
            Some("write_timeout")
        } else {
            None
        };
        if let Some(reason) = reason {
            (gate.refused)(reason);
        }
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Whether hyper gave up because a write stalled past the write timeout.
fn is_write_timeout(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(connections: usize, per_address: usize) -> Gate {
        Gate::new(
            Limits {
                connections,
                per_address,
                header_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(1),
                send_buffer: None,
            },
            |_| {},
        )
    }

    #[test]
    fn tickets_count_against_both_caps_until_dropped() {
        let g = gate(3, 2);
        let a: SocketAddr = "10.0.0.1:1000".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:1000".parse().expect("addr");
        let t1 = g.admit(a).expect("first from a");
        let t2 = g.admit(a).expect("second from a");
        assert_eq!(g.admit(a).err(), Some("per_address"));
        let t3 = g.admit(b).expect("b has its own share");
        assert_eq!(g.admit(b).err(), Some("capacity"));
        assert_eq!(g.open(), 3);
        drop(t1);
        let _t4 = g.admit(a).expect("a's share is back");
        drop((t2, t3));
        assert_eq!(g.open(), 1);
    }

    #[tokio::test]
    async fn closed_waits_for_the_last_ticket() {
        let g = gate(2, 2);
        let t = g
            .admit("10.0.0.1:1".parse().expect("addr"))
            .expect("ticket");
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(t);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained")
            .expect("join");
    }
}
