//! What every client connection and HTTP request shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::OrchestratorConfig;
use crate::metrics::RelayStats;
use crate::relay::RelayContext;

/// The client listener's state.
pub(crate) struct App {
    pub(crate) config: OrchestratorConfig,
    pub(crate) relay: Arc<RelayContext>,
    pub(crate) stats: Arc<RelayStats>,
    /// Whether a request may start, and the permits it holds.
    pub(crate) admission: Admission,
    /// Cancelled when shutdown begins: no new requests.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the grace period is over: end whatever is left.
    pub(crate) force: CancellationToken,
}
