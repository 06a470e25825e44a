//! The slow log: `SLOWLOG GET` replies parsed into entries.

use serde::Serialize;

use super::COMMAND_CHARS;

/// One slow-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowEntry {
    /// Its id.
    pub id: u64,
    /// When it ran, Unix seconds.
    pub at_unix_s: u64,
    /// How long it ran, µs.
    pub duration_us: u64,
    /// The command and its arguments, cut to 60 characters.
    pub command: String,
}

/// The entries of a `SLOWLOG GET` reply (an entry not shaped like one is
/// skipped).
pub fn parse_slowlog(reply: &redis::Value) -> Vec<SlowEntry> {
    let redis::Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries.iter().filter_map(slow_entry).collect()
}

fn slow_entry(entry: &redis::Value) -> Option<SlowEntry> {
    let redis::Value::Array(fields) = entry else {
        return None;
    };
    let int = |i: usize| match fields.get(i)? {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    let Some(redis::Value::Array(args)) = fields.get(3) else {
        return None;
    };
    let words: Vec<String> = args.iter().filter_map(word).collect();
    Some(SlowEntry {
        id: int(0)?,
        at_unix_s: int(1)?,
        duration_us: int(2)?,
        command: cut(&words.join(" "), COMMAND_CHARS),
    })
}

fn word(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
