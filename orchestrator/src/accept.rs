//! Accepting client connections. Every TCP connection holds a [`Ticket`]
//! from the moment it is accepted until it closes, WebSocket life
//! included: a permit of the connection cap (so connections that never
//! finish their handshake count too, and shutdown's drain ends when the
//! last ticket is dropped) and a place in its address's share. Headers must
//! arrive within the handshake timeout; then HTTP/1.1 is served with
//! upgrades.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::OrchestratorConfig;
use crate::metrics;

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// TCP connections open at once, handshakes included.
    pub(crate) connections: usize,
    /// TCP connections open at once from one client address.
    pub(crate) per_address: usize,
    /// Time for a client to send its request headers.
    pub(crate) handshake: Duration,
    /// Kernel send buffer of each socket, bytes.
    pub(crate) send_buffer: usize,
}

impl From<&OrchestratorConfig> for Limits {
    /// The connection cap (no more than the process's file-descriptor
    /// limit less 256, so the admin listener and the worker channel always
    /// have descriptors), the per-address cap, the handshake timeout and
    /// the socket send buffer.
    fn from(config: &OrchestratorConfig) -> Self {
        let descriptors =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(u64::MAX, |(soft, _)| soft);
        let by_descriptors = usize::try_from(descriptors.saturating_sub(256)).unwrap_or(usize::MAX);
        Self {
            connections: config.max_connections.min(by_descriptors.max(1)),
            per_address: config.max_connections_per_address,
            handshake: Duration::from_secs_f64(config.handshake_timeout_secs),
            send_buffer: config.ws_send_buffer_bytes,
        }
    }
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
pub(crate) struct Ticket(#[allow(dead_code)] Arc<(OwnedSemaphorePermit, AddressGuard)>);

/// The connection cap, shared with the shutdown drain.
#[derive(Clone)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    addresses: Arc<Addresses>,
    limits: Limits,
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.connections)),
            addresses: Arc::default(),
            limits,
        }
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.limits.connections - self.permits.available_permits()
    }

    /// Waits until every connection has closed (every ticket dropped).
    pub(crate) async fn closed(&self) {
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
/// caller waits on [`Gate::closed`]).
pub(crate) async fn serve(
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
                metrics::connection_refused(reason);
                debug!(%peer, reason, "connection refused");
                drop(tcp);
                continue;
            }
        };
        tune(&tcp, gate.limits.send_buffer);
        let (router, stop, handshake) = (router.clone(), stop.clone(), gate.limits.handshake);
        match tls.clone() {
            None => {
                tokio::spawn(connection(tcp, peer, router, ticket, handshake, stop));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    // The TLS handshake counts against the same timeout.
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, peer, router, ticket, handshake, stop).await,
                        Ok(Err(e)) => {
                            metrics::connection_refused("tls");
                            debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => metrics::connection_refused("handshake_timeout"),
                    }
                });
            }
        }
    }
}

fn tune(tcp: &TcpStream, send_buffer: usize) {
    let _ = tcp.set_nodelay(true);
    if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer) {
        warn!(error = %e, "cannot set the socket send buffer");
    }
}

/// Serves one connection: HTTP/1.1 with upgrades, headers within
/// `handshake`; on shutdown, a keep-alive connection closes after its
/// current request.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    ticket: Ticket,
    handshake: Duration,
    stop: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(ticket.clone());
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .serve_connection(TokioIo::new(io), service)
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
        if e.is_timeout() {
            metrics::connection_refused("handshake_timeout");
        }
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(connections: usize, per_address: usize) -> Gate {
        Gate::new(Limits {
            connections,
            per_address,
            handshake: Duration::from_secs(1),
            send_buffer: 65_536,
        })
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
