//! Flags for the admin endpoints that change a running process or cost it
//! CPU: fault injection (`/faults`) and CPU profiles (`/debug/pprof/…`).
//! Both are off unless asked for, and both need a bearer token.

/// `--allow-fault-injection`, `--allow-profiling`, `--admin-token`.
#[derive(Debug, Clone, Default, clap::Args)]
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
}

impl AdminConfig {
    /// Checks that what is allowed is protected.
    pub fn validate(&self) -> Result<(), String> {
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
