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
