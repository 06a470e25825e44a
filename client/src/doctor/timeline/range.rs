//! The time range of a timeline, as the command line gives it.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// A time on the command line: an RFC 3339 time, or a duration before now
/// (`10m`, `90s`, `2h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This time.
    At(SystemTime),
    /// This long before now.
    Ago(Duration),
}

/// A `--since` or `--until` value that is neither form.
#[derive(Debug, thiserror::Error)]
#[error(
    "{value:?} is neither an RFC 3339 time (2026-01-01T12:00:00Z) nor a duration before now (10m, 90s, 2h)"
)]
pub struct WhenError {
    value: String,
}

impl FromStr for When {
    type Err = WhenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(at) = humantime::parse_rfc3339_weak(s) {
            return Ok(Self::At(at));
        }
        humantime::parse_duration(s)
            .map(Self::Ago)
            .map_err(|_| WhenError {
                value: s.to_owned(),
            })
    }
}

impl When {
    /// The time this stands for, `now` being now.
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            Self::At(at) => at,
            Self::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// The times whose lines are kept, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first time kept.
    pub since: SystemTime,
    /// The last time kept; `None`: to the end of the logs.
    pub until: Option<SystemTime>,
}

impl Range {
    /// `since` and `until` resolved against `now`.
    pub fn resolve(since: When, until: Option<When>, now: SystemTime) -> Self {
        Self {
            since: since.resolve(now),
            until: until.map(|u| u.resolve(now)),
        }
    }

    pub(super) fn contains(&self, at: SystemTime) -> bool {
        at >= self.since && self.until.is_none_or(|u| at <= u)
    }
}
