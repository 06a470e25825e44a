//! Redis: unreachable, slow, or failing the phrase cache's lookups.

use super::super::figures::Figures;
use super::super::{Cause, Finding, Hop, Severity};
use super::*;

/// `redis_degraded` (redis): the orchestrator's readiness check of Redis
/// fails, the doctor's own PING fails or is slow, or cache lookups fail.
pub(crate) fn redis_degraded(f: &Figures) -> Option<Finding> {
    let r = &f.redis;
    let mut e = Vec::new();
    let mut why = Vec::new();
    if let Some((status, detail)) = &r.ready
        && status != "ok"
    {
        why.push(format!("the orchestrator's check says {detail}"));
        e.push(evidence("ready:checks.redis", 0.0, "ok"));
    }
    match &r.ping {
        Some(Err(reason)) => {
            why.push(format!("PING failed ({reason})"));
            e.push(evidence("doctor:redis_ping_ok", 0.0, "1"));
        }
        Some(Ok(ms)) if *ms >= SLOW_REDIS_MS => {
            why.push(format!("PING took {ms:.0} ms"));
            e.push(evidence(
                "doctor:redis_ping_ms",
                *ms,
                format!("< {SLOW_REDIS_MS}"),
            ));
        }
        _ => {}
    }
    if let Some(o) = &f.orchestrator
        && o.cache_errors > 0.0
    {
        why.push(format!(
            "{} of {} phrase-cache lookups failed",
            o.cache_errors, o.cache_lookups
        ));
        e.push(evidence(
            "tts_orchestrator_phrase_cache_lookups_total{result=\"error\"} (window)",
            o.cache_errors,
            "0",
        ));
    }
    if why.is_empty() {
        return None;
    }
    Some(Finding {
        cause: Cause::RedisDegraded,
        hop: Hop::Redis,
        severity: Severity::Warning,
        summary: format!(
            "Redis{} is degraded: {}.",
            r.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default(),
            why.join("; ")
        ),
        evidence: e,
        action: "Check the Redis server (`doctor redis`: slow log, memory, clients; is it running?); meanwhile static workers serve, registry workers are kept while they answer and the phrase cache is skipped.".into(),
        certainty: if r.ping.as_ref().is_some_and(Result::is_err) { 0.9 } else { 0.7 },
        runbook: String::new(),
    })
}
