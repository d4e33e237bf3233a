//! Exit codes: distinct per kind of failure so scripts can branch on them.

/// Everything worked.
pub const OK: i32 = 0;
/// Something unexpected inside gts-webchat.
pub const INTERNAL: i32 = 1;
/// The command line was wrong (clap also uses 2).
pub const USAGE: i32 = 2;
/// The relay could not be reached (down, wrong URL, network).
pub const UNREACHABLE: i32 = 3;
/// The relay answered and refused (bad token, unknown recipient, not allowed…).
pub const REFUSED: i32 = 4;
/// Local state is missing or broken (unknown persona, unreadable file, bad config).
pub const LOCAL: i32 = 5;
/// The daemon asked about is not running.
pub const NOT_RUNNING: i32 = 6;
/// The daemon is already running.
pub const ALREADY_RUNNING: i32 = 7;
/// The AI host ran and failed (run-host): its own reason is on stderr.
pub const HOST_FAILED: i32 = 8;
/// The AI host is not installed or not on PATH (run-host).
pub const HOST_MISSING: i32 = 9;
