//! The table's rows, and the findings they make.

use serde_json::json;

use crate::doctor::{Findings, Status};

/// One check's outcome.
pub(super) struct Row {
    pub(super) check: String,
    pub(super) status: Status,
    pub(super) detail: String,
}

/// A row.
pub(super) fn row(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Row {
    Row {
        check: check.into(),
        status,
        detail: detail.into(),
    }
}

/// The table, its JSON, and the worst status among the rows.
pub(super) fn findings(rows: Vec<Row>) -> Findings {
    let status = rows
        .iter()
        .map(|r| r.status)
        .fold(Status::Ok, |worst, s| match (worst, s) {
            (Status::Fail, _) | (_, Status::Fail) => Status::Fail,
            (Status::Warn, _) | (_, Status::Warn) => Status::Warn,
            _ => Status::Ok,
        });
    let detail = json!({
        "status": status,
        "checks": rows.iter().map(|r| json!({"check": r.check.trim(), "status": r.status, "detail": r.detail})).collect::<Vec<_>>(),
    });
    Findings {
        columns: vec!["check".into(), "status".into(), "detail".into()],
        rows: rows
            .into_iter()
            .map(|r| vec![r.check, r.status.as_str().to_owned(), r.detail])
            .collect(),
        status,
        detail,
    }
}
