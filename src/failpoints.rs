//! Crash points for the fault tests. `GTS_WEBCHAT_FAILPOINTS=name[,name…]` makes the process
//! abort, as a `kill -9` would, the moment it reaches one of the named points; that is how a
//! test lands a crash exactly in a window between two durable steps. Unset (always, outside
//! tests), a check is one read of a value parsed once.

use std::sync::OnceLock;

/// The environment variable that names the armed points.
pub const ENV: &str = "GTS_WEBCHAT_FAILPOINTS";

fn armed() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Aborts the process if `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|p| p == name) {
        eprintln!("gts-webchat: failpoint {name} reached: aborting");
        std::process::abort();
    }
}
