//! Faults injected from outside the product, for the diagnosis tests: TCP
//! proxies that delay or damage what crosses them, CPU hogs, clients that
//! never read, and steady background traffic. Everything stays on
//! loopback and ends when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a proxy does to the bytes from the upstream (the worker) to the
/// downstream (the orchestrator).
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// Delay every byte, both ways, by this much (a delay line: throughput
    /// is kept, as on a long network path).
    Delay(Duration),
    /// Flip a byte inside every `n`-th audio payload the worker sends (a
    /// protobuf `bytes payload = 2` of 1,920 bytes, found by its field tag
    /// and length), leaving the framing intact.
    FlipPayloads(usize),
}

/// A TCP proxy in front of `upstream` on a free loopback port.
pub struct Proxy {
    /// Where to connect instead of the upstream.
    pub addr: SocketAddr,
    /// Payloads damaged so far.
    pub flipped: Arc<AtomicUsize>,
    stop: CancellationToken,
    _task: JoinHandle<()>,
}

impl Proxy {
    /// Starts proxying to `upstream`, doing `damage`.
    pub async fn start(upstream: SocketAddr, damage: Damage) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let flipped = Arc::new(AtomicUsize::new(0));
        let (token, counter) = (stop.clone(), Arc::clone(&flipped));
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((down, _)) = accepted else { continue };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                tokio::spawn(pipe_pair(
                    down,
                    up,
                    damage,
                    Arc::clone(&counter),
                    token.clone(),
                ));
            }
        });
        Self {
            addr,
            flipped,
            stop,
            _task: task,
        }
    }

    /// `http://` + its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pipe_pair(
    down: TcpStream,
    up: TcpStream,
    damage: Damage,
    flipped: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    let delay = match damage {
        Damage::Delay(d) => d,
        Damage::FlipPayloads(_) => Duration::ZERO,
    };
    let flip = match damage {
        Damage::FlipPayloads(n) => Some(n.max(1)),
        Damage::Delay(_) => None,
    };
    let to_up = pipe(down_r, up_w, delay, None, Arc::clone(&flipped));
    let to_down = pipe(up_r, down_w, delay, flip, flipped);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = async { tokio::join!(to_up, to_down) } => {}
    }
}

/// Copies one direction through a delay line, damaging payloads when
/// asked.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    flip_every: Option<usize>,
    flipped: Arc<AtomicUsize>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        if let Some(every) = flip_every {
            flip_payloads(&mut chunk, every, &mut seen, &flipped);
        }
        if tx
            .send((tokio::time::Instant::now() + delay, chunk))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Flips a byte 100 bytes into every `every`-th 1,920-byte payload field
/// that lies wholly in `chunk` (tag 0x12, length 0x80 0x0F).
fn flip_payloads(chunk: &mut [u8], every: usize, seen: &mut usize, flipped: &AtomicUsize) {
    let mut i = 0;
    while i + 3 + 1920 <= chunk.len() {
        if chunk[i..i + 3] == [0x12, 0x80, 0x0F] {
            *seen += 1;
            if (*seen).is_multiple_of(every) {
                chunk[i + 3 + 100] ^= 0x5A;
                flipped.fetch_add(1, Ordering::Relaxed);
            }
            i += 3 + 1920;
        } else {
            i += 1;
        }
    }
}

/// Busy processes that take the CPU from everything else, killed on drop.
pub struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    /// Starts `n` shell busy loops.
    pub fn start(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The longest [`Traffic::started`] waits for a first request to end.
pub const STARTED_WITHIN: Duration = Duration::from_secs(30);

/// Steady traffic: `concurrency` clients each speaking `text` in real time
/// again and again until stopped; counts what completed and what failed.
pub struct Traffic {
    /// Requests that completed with every frame verified.
    pub completed: Arc<AtomicUsize>,
    /// Requests that ended otherwise.
    pub failed: Arc<AtomicUsize>,
    /// Told of every request that ends, either way.
    progress: Arc<Notify>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the clients.
    pub fn start(ws_url: &str, concurrency: usize, text: &'static str) -> Self {
        let completed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Notify::new());
        let tasks = (0..concurrency)
            .map(|_| {
                let (url, ok, bad, stop, progress) = (
                    ws_url.to_owned(),
                    Arc::clone(&completed),
                    Arc::clone(&failed),
                    Arc::clone(&stop),
                    Arc::clone(&progress),
                );
                tokio::spawn(async move {
                    use tts_client::{Client, SynthesizeOptions};
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut client) = Client::connect(&url).await else {
                            bad.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        };
                        client.timeout = Duration::from_secs(20);
                        while !stop.load(Ordering::Relaxed) {
                            match client.synthesize(text, &SynthesizeOptions::default()).await {
                                Ok(u) if u.report.integrity_failures() == 0 => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    progress.notify_waiters();
                                }
                                _ => {
                                    // Back off as a well-behaved client
                                    // would after a refusal or a failure.
                                    bad.fetch_add(1, Ordering::Relaxed);
                                    progress.notify_waiters();
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    break;
                                }
                            };
                        }
                    }
                })
            })
            .collect();
        Self {
            completed,
            failed,
            progress,
            stop,
            tasks,
        }
    }

    /// Waits until a request has ended, completed or failed (the traffic
    /// reaches the worker and back; through a proxy that damages every
    /// stream none completes), at most [`STARTED_WITHIN`]; panics if none
    /// has by then.
    pub async fn started(&self) {
        let flowing = async {
            loop {
                // Asked for before the look, so that a completion between
                // the look and the wait still wakes it.
                let told = self.progress.notified();
                let ended =
                    self.completed.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
                if ended > 0 {
                    return;
                }
                told.await;
            }
        };
        let failed = || self.failed.load(Ordering::Relaxed);
        assert!(
            tokio::time::timeout(STARTED_WITHIN, flowing).await.is_ok(),
            "no request of the traffic ended within {STARTED_WITHIN:?} ({} failed)",
            failed()
        );
    }

    /// Stops the clients (each finishes or abandons its request).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        (
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_payload_fields_are_damaged_every_nth_time() {
        let field = |fill: u8| {
            let mut f = vec![0x12, 0x80, 0x0F];
            f.extend(std::iter::repeat_n(fill, 1920));
            f
        };
        let mut chunk = [field(1), vec![0x08, 0x05], field(2), field(3)].concat();
        let original = chunk.clone();
        let (mut seen, flipped) = (0, AtomicUsize::new(0));
        flip_payloads(&mut chunk, 2, &mut seen, &flipped);
        assert_eq!((seen, flipped.load(Ordering::Relaxed)), (3, 1));
        let diff: Vec<usize> = (0..chunk.len())
            .filter(|&i| chunk[i] != original[i])
            .collect();
        // The second payload: after the first field (1,923 bytes), two
        // bytes of another field, then its 3-byte header and 100 bytes.
        assert_eq!(diff, vec![1923 + 2 + 3 + 100]);
        // A payload cut by the chunk's end is left alone.
        let mut cut = field(4)[..1000].to_vec();
        flip_payloads(&mut cut, 1, &mut seen, &flipped);
        assert_eq!(flipped.load(Ordering::Relaxed), 1);
    }
}
