//! Built-in diagnostics (`tts-client doctor …`): what operators would
//! otherwise do with shell runbooks. Each command returns a [`Findings`]
//! value that renders as a table or JSON and says whether anything is wrong.

pub mod chaos;
pub mod frames;
pub mod health;
pub mod profile;
pub mod prom;
pub mod redis;
pub mod rtt;
pub mod timeline;
pub mod trace;
pub mod why;

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth a look; does not fail the command.
    Warn,
    /// Wrong; the command exits non-zero.
    Fail,
}

impl Status {
    /// The word printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// A table: column names, rows, and the worst status among the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
    /// Overall status.
    pub status: Status,
    /// The command's own structured result, for `--json`.
    pub detail: serde_json::Value,
}

impl Findings {
    /// The table for people.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table
            .load_preset(UTF8_BORDERS_ONLY)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(&self.columns);
        if table.width().is_none() {
            // Not a terminal: wrap long cells at a readable width.
            table.set_width(140);
        }
        for row in &self.rows {
            table.add_row(row);
        }
        format!("{table}\nstatus: {}\n", self.status.as_str())
    }

    /// The process exit code: `failed` when a check failed, else 0.
    pub fn exit_code(&self, failed: u8) -> u8 {
        if self.status == Status::Fail {
            failed
        } else {
            tts_telemetry::exit::OK
        }
    }
}

/// Percentiles of a set of durations in milliseconds, from an HDR histogram
/// (microsecond resolution, 3 significant digits).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest, ms.
    pub min: f64,
    /// Mean, ms.
    pub mean: f64,
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

impl Percentiles {
    /// Summarises `values_ms`.
    pub fn of(values_ms: &[f64]) -> Self {
        let Ok(mut h) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
            return Self::default();
        };
        for &v in values_ms {
            let _ = h.record((v * 1e3).round().max(1.0) as u64);
        }
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1e3,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_series() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&values);
        assert_eq!(p.count, 100);
        assert!(
            (p.min - 1.0).abs() < 0.01 && (p.max - 100.0).abs() < 0.1,
            "{p:?}"
        );
        assert!((p.p50 - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p95 - 95.0).abs() < 0.1, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.mean - 50.5).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn the_worst_row_decides_the_exit_code() {
        let f = Findings {
            columns: vec!["a".into()],
            rows: vec![vec!["x".into()]],
            status: Status::Fail,
            detail: serde_json::Value::Null,
        };
        assert_eq!(f.exit_code(69), 69);
        assert!(f.to_table().contains("status: FAIL"));
    }
}
