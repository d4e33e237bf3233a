//! systemd's notify protocol (sd-notify): READY once the relay listens, STOPPING at shutdown,
//! and, under a unit with `WatchdogSec=`, a WATCHDOG keep-alive at half that period, sent only
//! while the relay can still read its storage, so a hung relay is restarted, not only a dead
//! one. Without `NOTIFY_SOCKET` (no systemd) all of it is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

use super::AppState;

// Each is one datagram to a local socket: it does not block.
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("telling systemd the relay is ready: {e}");
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Runs until shutdown when systemd asked for keep-alives.
pub async fn keep_alive(state: AppState) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let tick = (period / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = state.shutdown.cancelled() => return,
        }
        match tokio::time::timeout(tick, state.store.stream_head(0)).await {
            Ok(Ok(_)) => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Ok(Err(e)) => tracing::warn!("no keep-alive for systemd: storage failed: {e}"),
            Err(_) => tracing::warn!("no keep-alive for systemd: storage did not answer"),
        }
    }
}
