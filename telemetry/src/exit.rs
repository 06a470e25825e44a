//! Exit codes, the same for every binary of the project, so that scripts
//! can tell a usage mistake from bad audio from a service that is down.
//! The numbers follow BSD's `sysexits.h`.

/// Everything went as asked.
pub const OK: u8 = 0;
/// Anything not covered below.
pub const FAILURE: u8 = 1;
/// The command line was wrong (clap's own exit code for usage errors).
pub const USAGE: u8 = 2;
/// The configuration is invalid: a flag's value, a missing voice or
/// runtime file, an unreadable certificate.
pub const CONFIG: u8 = 64;
/// The data was bad: audio that failed verification or raised quality
/// events, a request the server refused as the client's mistake.
pub const DATA: u8 = 65;
/// A service is unavailable or unhealthy: nothing listening, a port
/// already taken, the worker down, the server overloaded or shutting down.
pub const UNAVAILABLE: u8 = 69;

/// Every code and what it means, the one table the README ("Exit codes"),
/// docs/runbook.md and every binary's `--help` show (a test compares
/// them).
pub const TABLE: [(u8, &str); 6] = [
    (OK, "everything went as asked"),
    (
        FAILURE,
        "anything not below, such as a log file `doctor trace` or `doctor timeline` cannot read",
    ),
    (USAGE, "usage: a flag or argument the command does not take"),
    (
        CONFIG,
        "configuration: a flag's value, a missing voice or runtime file, an unreadable certificate, `--play` in a build without playback",
    ),
    (
        DATA,
        "data: audio that failed verification or raised a quality event (`say`, `doctor frames`), a request the server refused as the client's mistake",
    ),
    (
        UNAVAILABLE,
        "unavailable: nothing listening, a port already taken, the worker down, the server overloaded or shutting down, `doctor health`/`rtt` finding something unhealthy, `doctor why` finding a warning or worse, `doctor chaos` refused, `doctor profile` refused or unreachable, `doctor redis` not reaching Redis, a load test in which no request completed",
    ),
];

/// [`TABLE`] as `--help` shows it, after the options.
pub fn help() -> String {
    let mut text = String::from("Exit codes (the same for every tts binary):\n");
    for (code, meaning) in TABLE {
        text.push_str(&format!("  {code:>2}  {meaning}\n"));
    }
    text
}

/// [`TABLE`] as the docs show it, a Markdown table.
pub fn markdown() -> String {
    let mut text = String::from("| code | meaning |\n|---|---|\n");
    for (code, meaning) in TABLE {
        text.push_str(&format!("| {code} | {meaning} |\n"));
    }
    text
}
