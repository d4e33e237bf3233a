//! systemd's notify protocol (sd-notify), for the relay and the daemon under `Type=notify`:
//! READY once the process serves, STOPPING at shutdown, and, under a unit with
//! `WatchdogSec=`, a WATCHDOG keep-alive at half that period sent only while the process's own
//! probe answers (the relay reads its storage, the daemon answers on its socket), so a hung
//! process is restarted, not only a dead one. Without `NOTIFY_SOCKET` all of it is a no-op.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// What systemd sets for the main process only: children (hooks, AI host CLIs, speech
/// engines) must not speak for it.
pub const ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

// Each is one datagram to a local socket: it does not block.
pub fn ready(what: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("telling systemd the {what} is ready: {e}");
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Runs until `shutdown` when systemd asked for keep-alives: each tick, a keep-alive only if
/// `probe` answers Ok within the tick.
pub async fn keep_alive<F, Fut, E>(shutdown: CancellationToken, what: &str, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let tick = (period / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return,
        }
        match tokio::time::timeout(tick, probe()).await {
            Ok(Ok(())) => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Ok(Err(e)) => tracing::warn!("no keep-alive for systemd: {what} failed: {e}"),
            Err(_) => tracing::warn!("no keep-alive for systemd: {what} did not answer"),
        }
    }
}
