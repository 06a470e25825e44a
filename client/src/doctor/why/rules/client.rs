//! What clients do to the pipeline: read too slowly, or send more than the
//! orchestrator's limits let in.

use super::super::figures::Figures;
use super::super::{Cause, Finding, Hop, Severity};
use super::*;

/// `client_slow` (client): clients read slower than audio is produced:
/// streams ended `client_too_slow` (a warning), or long waits on full
/// client queues alone (informational: a fast download fills its queue
/// by design).
pub(crate) fn client_slow(f: &Figures) -> Option<Finding> {
    let o = f.orchestrator.as_ref()?;
    let held = o.backpressure.sum / f.window_s.max(1.0);
    let full = o.client_queue.share_above(33.0).unwrap_or(0.0);
    let severity = if o.client_too_slow > 0.0 {
        Severity::Warning
    } else if held >= BACKPRESSURE_SHARE {
        Severity::Info
    } else {
        return None;
    };
    Some(Finding {
        cause: Cause::ClientSlow,
        hop: Hop::Client,
        severity,
        summary: format!(
            "Clients read slower than their audio is produced: {} stream(s) were ended for not reading, and relays waited {:.1} s per second for room in full client queues.",
            o.client_too_slow, held
        ),
        evidence: vec![
            evidence("tts_orchestrator_requests_total{code=\"client_too_slow\"} (window)", o.client_too_slow, "0"),
            evidence("rate(tts_orchestrator_backpressure_wait_seconds_sum)", held, format!("< {BACKPRESSURE_SHARE}")),
            evidence("share of tts_orchestrator_client_queue_frames samples above 33", full, "small"),
        ],
        action: "The fix is in the clients: read the socket as fast as audio plays (a playback buffer, not a blocking writer); the server ends a stream its client does not read for --stalled-stream-secs, and others are not affected.".into(),
        certainty: if o.client_too_slow > 0.0 { 0.9 } else { 0.5 },
        runbook: String::new(),
    })
}

/// `admission_refusing` (orchestrator): requests or connections refused
/// by limits (per-address rate, connection caps), not for lack of compute.
pub(crate) fn admission_refusing(f: &Figures) -> Option<Finding> {
    let o = f.orchestrator.as_ref()?;
    if o.rate_limited == 0.0 && o.connections_refused == 0.0 {
        return None;
    }
    Some(Finding {
        cause: Cause::AdmissionRefusing,
        hop: Hop::Orchestrator,
        severity: Severity::Warning,
        summary: format!(
            "The orchestrator's limits refused {} request(s) (rate_limited) and {} connection(s) in the window; this is policy, not a lack of compute.",
            o.rate_limited, o.connections_refused
        ),
        evidence: vec![
            evidence("tts_orchestrator_requests_total{code=\"rate_limited\"} (window)", o.rate_limited, "0"),
            evidence("tts_orchestrator_connections_refused_total{reason=~\"capacity|per_address\"} (window)", o.connections_refused, "0"),
        ],
        action: "If the traffic is legitimate, raise --requests-per-second-per-address, --max-connections-per-address or --max-connections; otherwise find the client that floods (`doctor timeline --marked`).".into(),
        certainty: 0.8,
        runbook: String::new(),
    })
}
