//! Knowing when every response stream has ended, by signal rather than by
//! sleeping: each stream holds a guard, and whoever waits is woken when the
//! last guard is dropped.

use std::sync::Arc;

use tokio::sync::watch;

/// Counts the response streams in progress.
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    /// Streams in progress; one value, overwritten (a watch holds no queue).
    streams: Arc<watch::Sender<usize>>,
}

/// One response stream in progress, until dropped.
#[derive(Debug)]
pub(crate) struct DrainGuard(Arc<watch::Sender<usize>>);

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            streams: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Counts a stream until the guard is dropped.
    pub(crate) fn guard(&self) -> DrainGuard {
        self.streams.send_modify(|n| *n += 1);
        DrainGuard(Arc::clone(&self.streams))
    }

    /// Resolves once no stream is in progress.
    pub(crate) async fn idle(&self) {
        let mut streams = self.streams.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = streams.wait_for(|n| *n == 0).await;
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_resolves_when_the_last_stream_ends() {
        let drain = Drain::new();
        tokio::time::timeout(Duration::from_secs(1), drain.idle())
            .await
            .expect("idle with no stream");
        let (a, b) = (drain.guard(), drain.guard());
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one stream is still in progress");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken when the last stream ended")
            .expect("task");
    }
}
