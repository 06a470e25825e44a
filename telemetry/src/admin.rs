//! Flags for the admin endpoints that change a running process or cost it
//! CPU: fault injection (`/faults`) and CPU profiles (`/debug/pprof/…`).
//! Both are off unless asked for, and both need a bearer token.

/// `--allow-fault-injection`, `--allow-profiling`, `--admin-token`, and
/// the admin listener's bounds.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminConfig {
    /// Accept `POST /faults` on the admin (orchestrator) or metrics
    /// (worker) listener: chaos experiments with bounded, logged faults
    /// (see `docs/runbook.md`). Needs `--admin-token`.
    #[arg(long, env = "TTS_ALLOW_FAULT_INJECTION")]
    pub allow_fault_injection: bool,

    /// Serve CPU profiles at `GET /debug/pprof/profile?seconds=N` (one at a
    /// time, at most 60 s). Needs `--admin-token`.
    #[arg(long, env = "TTS_ALLOW_PROFILING")]
    pub allow_profiling: bool,

    /// Bearer token that `POST /faults`, `DELETE /faults` and the profile
    /// endpoint require (`authorization: Bearer TOKEN`).
    #[arg(long, env = "TTS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Open connections on the admin (orchestrator) or metrics (worker)
    /// listener; more are closed at once. Counted in the descriptors the
    /// process keeps back from its client connections.
    #[arg(long, env = "TTS_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,

    /// Seconds a connection to the admin or metrics listener has to send
    /// its request headers, may sit idle between requests, or may leave a
    /// response unread before it is closed.
    #[arg(long, env = "TTS_ADMIN_TIMEOUT_SECS", default_value_t = 10.0)]
    pub admin_timeout_secs: f64,
}

impl Default for AdminConfig {
    /// The flags' defaults: nothing allowed, no token.
    fn default() -> Self {
        Self {
            allow_fault_injection: false,
            allow_profiling: false,
            admin_token: None,
            admin_max_connections: 64,
            admin_timeout_secs: 10.0,
        }
    }
}

impl AdminConfig {
    /// The admin listener's bounds: its own connection cap (any number
    /// from one address), and one timeout for headers, idle keep-alive
    /// and stalled writes.
    pub fn limits(&self) -> crate::listener::Limits {
        let timeout = std::time::Duration::from_secs_f64(self.admin_timeout_secs);
        crate::listener::Limits {
            connections: self.admin_max_connections,
            per_address: self.admin_max_connections,
            header_timeout: timeout,
            write_timeout: timeout,
            send_buffer: None,
        }
    }

    /// Checks that what is allowed is protected.
    pub fn validate(&self) -> Result<(), String> {
        if self.admin_max_connections == 0 {
            return Err("--admin-max-connections must be at least 1".into());
        }
        if !(self.admin_timeout_secs.is_finite() && self.admin_timeout_secs > 0.0) {
            return Err("--admin-timeout-secs must be a positive number".into());
        }
        if self.admin_token.as_deref() == Some("") {
            return Err("--admin-token must not be empty".into());
        }
        if (self.allow_fault_injection || self.allow_profiling) && self.admin_token.is_none() {
            return Err(
                "--allow-fault-injection and --allow-profiling need --admin-token (or TTS_ADMIN_TOKEN)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The fault registry for a process applying `components`' faults.
    pub fn faults(
        &self,
        components: &[crate::faults::Component],
    ) -> std::sync::Arc<crate::faults::Faults> {
        crate::faults::Faults::new(
            components,
            self.allow_fault_injection,
            self.admin_token.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_allowed_needs_a_token() {
        assert!(AdminConfig::default().validate().is_ok());
        let open = AdminConfig {
            allow_fault_injection: true,
            ..AdminConfig::default()
        };
        assert!(open.validate().is_err());
        let profiling = AdminConfig {
            allow_profiling: true,
            ..AdminConfig::default()
        };
        assert!(profiling.validate().is_err());
        let guarded = AdminConfig {
            admin_token: Some("t".into()),
            ..open
        };
        assert!(guarded.validate().is_ok());
        let empty = AdminConfig {
            admin_token: Some(String::new()),
            ..AdminConfig::default()
        };
        assert!(empty.validate().is_err());
    }
}
