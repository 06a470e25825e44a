//! A real Redis server for the tests that need one.

use std::time::Duration;

use crate::{eventually, free_port};

/// A real `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    child: std::process::Child,
}

impl RedisServer {
    /// Starts `redis-server` (from `scripts/setup.sh --test`) without
    /// persistence and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = free_port();
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            child: Self::spawn(port).await,
        }
    }

    async fn spawn(port: u16) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup.sh --test)");
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "redis-server did not start");
        child
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// Kills the server (its data goes with it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port()).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
