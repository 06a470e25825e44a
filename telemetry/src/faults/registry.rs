//! A process's fault registry: which kinds it may apply, which are
//! active, and the checks the hot paths make (one atomic load while no
//! fault is active).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::{ActiveFault, Component, Fault, FaultError, MAX_DURATION_SECS};

#[derive(Debug)]
pub(super) struct Active {
    id: u64,
    fault: Fault,
    started: SystemTime,
    until: Instant,
}

/// A process's faults: which it may apply, and which are active.
#[derive(Debug)]
pub struct Faults {
    components: Vec<Component>,
    enabled: bool,
    token: Option<String>,
    any: AtomicBool,
    active: Mutex<Vec<Active>>,
    next_id: AtomicU64,
    /// Draws for jitter (a counter run through a hash).
    draws: AtomicU64,
}

impl Faults {
    /// Faults applied by `components`; `enabled` with `token` accepts
    /// `POST /faults`, otherwise every start is refused.
    pub fn new(components: &[Component], enabled: bool, token: Option<String>) -> Arc<Self> {
        let faults = Arc::new(Self {
            components: components.to_vec(),
            enabled: enabled && token.is_some(),
            token,
            any: AtomicBool::new(false),
            active: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            draws: AtomicU64::new(0),
        });
        if faults.enabled {
            spawn_expiry(Arc::downgrade(&faults));
        }
        faults
    }

    /// Faults that can never be started (the default).
    pub fn disabled(components: &[Component]) -> Arc<Self> {
        Self::new(components, false, None)
    }

    /// The kinds this process applies.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.components
            .iter()
            .flat_map(|c| c.kinds().iter().copied())
    }

    /// Whether starting faults is allowed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Creates the gauge of every kind this process applies, at 0 (call
    /// once the metrics recorder is installed).
    pub fn describe(&self) {
        for component in &self.components {
            metrics::describe_gauge!(
                component.gauge(),
                "1 while a fault of this kind is injected (an experiment, not an incident)"
            );
            for kind in component.kinds() {
                metrics::gauge!(component.gauge(), "kind" => *kind).set(0.0);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the token (constant time) against the admin token.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<(), FaultError> {
        use subtle::ConstantTimeEq;
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        match (&self.token, bearer) {
            (Some(token), Some(given)) if bool::from(token.as_bytes().ct_eq(given.as_bytes())) => {
                Ok(())
            }
            _ => Err(FaultError::Unauthorized),
        }
    }

    /// Starts `fault` for `duration` (replacing an active fault of the
    /// same kind).
    pub fn start(&self, fault: Fault, duration: Duration) -> Result<ActiveFault, FaultError> {
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        let component = fault.component();
        if !self.components.contains(&component) {
            return Err(FaultError::Elsewhere {
                kind: fault.kind(),
                applies: component.as_str(),
                here: self.here(),
            });
        }
        fault.validate()?;
        let secs = duration.as_secs_f64();
        if !(secs > 0.0 && secs <= MAX_DURATION_SECS) {
            return Err(FaultError::Invalid(format!(
                "duration_s must be above 0 and at most {MAX_DURATION_SECS}"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut active = self.lock();
        active.retain(|a| a.fault.kind() != fault.kind());
        active.push(Active {
            id,
            fault,
            started: SystemTime::now(),
            until: Instant::now() + duration,
        });
        self.any.store(true, Ordering::Release);
        metrics::gauge!(component.gauge(), "kind" => fault.kind()).set(1.0);
        warn!(fault_id = id, kind = fault.kind(), params = %params(&fault), duration_s = secs,
            "fault injection started: this is an experiment, not an incident");
        let view = active
            .last()
            .map(|a| view(a, Instant::now()))
            .ok_or_else(|| FaultError::Invalid("lost".into()))?;
        Ok(view)
    }

    /// Ends the active faults of `kind`, or all of them; returns how many.
    pub fn stop(&self, kind: Option<&str>) -> usize {
        self.expire();
        let mut active = self.lock();
        let before = active.len();
        active.retain(|a| {
            let ends = kind.is_none_or(|k| a.fault.kind() == k);
            if ends {
                ended(a, "stopped");
            }
            !ends
        });
        self.any.store(!active.is_empty(), Ordering::Release);
        before - active.len()
    }

    /// Ends the faults whose time is up.
    pub fn expire(&self) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut active = self.lock();
        active.retain(|a| {
            let ends = a.until <= now;
            if ends {
                ended(a, "expired");
            }
            !ends
        });
        self.any.store(!active.is_empty(), Ordering::Release);
    }

    /// The active faults.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.expire();
        let now = Instant::now();
        self.lock().iter().map(|a| view(a, now)).collect()
    }

    /// The active fault of `kind`, if any: one atomic load when none is.
    pub fn current(&self, kind: &str) -> Option<Fault> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        self.lock()
            .iter()
            .find(|a| a.fault.kind() == kind && a.until > now)
            .map(|a| a.fault)
    }

    /// With `link_latency` active: this frame's delay (latency ± jitter).
    pub fn link_delay(&self) -> Option<Duration> {
        let Fault::LinkLatency {
            latency_ms,
            jitter_ms,
        } = self.current("link_latency")?
        else {
            return None;
        };
        let jitter = i64::from(jitter_ms);
        let offset = if jitter > 0 {
            (self.draw() % (2 * jitter as u64 + 1)) as i64 - jitter
        } else {
            0
        };
        let ms = (i64::from(latency_ms) + offset).max(0);
        Some(Duration::from_millis(ms as u64))
    }

    /// Whether frame `sequence` is to be corrupted.
    pub fn corrupts(&self, sequence: u32) -> bool {
        matches!(self.current("corrupt_frames"),
            Some(Fault::CorruptFrames { every }) if (sequence + 1).is_multiple_of(every.max(1)))
    }

    /// Whether frame `sequence` is to be dropped (never the first).
    pub fn drops(&self, sequence: u32) -> bool {
        matches!(self.current("drop_frames"),
            Some(Fault::DropFrames { every }) if sequence > 0 && (sequence + 1).is_multiple_of(every.max(1)))
    }

    /// The slowdown factor, with `slowdown` active.
    pub fn slowdown(&self) -> Option<f64> {
        match self.current("slowdown")? {
            Fault::Slowdown { factor } => Some(factor),
            _ => None,
        }
    }

    /// Whether synthesis is to stall.
    pub fn stalled(&self) -> bool {
        self.current("stall").is_some()
    }

    /// The audio fault for a new request, if one is active.
    pub fn audio(&self) -> Option<Fault> {
        ["clipping", "dc_offset", "dead_air"]
            .into_iter()
            .find_map(|k| self.current(k))
    }

    fn here(&self) -> String {
        self.components
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    fn draw(&self) -> u64 {
        use std::hash::{BuildHasher, RandomState};
        static SEED: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        SEED.get_or_init(RandomState::new).hash_one(n)
    }
}

fn params(fault: &Fault) -> String {
    match serde_json::to_value(fault) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("kind");
            serde_json::Value::Object(map).to_string()
        }
        _ => String::new(),
    }
}

fn ended(a: &Active, how: &'static str) {
    let component = a.fault.component();
    metrics::gauge!(component.gauge(), "kind" => a.fault.kind()).set(0.0);
    info!(
        fault_id = a.id,
        kind = a.fault.kind(),
        how,
        "fault injection ended"
    );
}

fn view(a: &Active, now: Instant) -> ActiveFault {
    ActiveFault {
        id: a.id,
        component: a.fault.component().as_str().to_owned(),
        fault: a.fault,
        started: humantime::format_rfc3339_millis(a.started).to_string(),
        remaining_s: (a.until.saturating_duration_since(now).as_secs_f64() * 10.0).round() / 10.0,
    }
}

/// Ends expired faults every 250 ms (so that the gauge and the log say so
/// promptly) for as long as the registry lives.
fn spawn_expiry(faults: Weak<Faults>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match faults.upgrade() {
                Some(f) => f.expire(),
                None => return,
            }
        }
    });
}
