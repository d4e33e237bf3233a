//! Presence: online while the daemon runs, "working" while a hook runs, refreshed every 30 s
//! (the relay lapses it after 90), offline when it stops.

use std::sync::Arc;
use std::time::Duration;

use super::supervisor::{Daemon, PresenceWant};
use crate::client::login::presence_request;

/// Presence refresh.
const PRESENCE_EVERY: Duration = Duration::from_secs(30);

/// Keeps presence as wanted until aborted.
pub async fn keep(d: Arc<Daemon>) {
    let mut want = d.presence.subscribe();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    let mut sent: Option<PresenceWant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = want.changed() => if changed.is_err() { return },
        }
        let w = *want.borrow_and_update();
        let Some(session) = d.sessions.current() else {
            continue;
        };
        let fresh = sent != Some(w);
        // Offline needs saying only once; online is refreshed on every tick.
        if !w.online && !fresh {
            continue;
        }
        let status = if w.working { "working" } else { "" };
        let req = presence_request(&session.persona, w.online, Some(status));
        match session.client.presence(&req).await {
            Ok(_) => {
                sent = Some(w);
                d.health.set_online(w.online);
            }
            Err(e) => tracing::debug!("presence update failed: {e}"),
        }
    }
}

/// Says offline (bounded: a stopping daemon does not wait long for a dead relay).
pub async fn go_offline(d: &Daemon) {
    let Some(session) = d.sessions.current() else {
        return;
    };
    let req = presence_request(&session.persona, false, Some(""));
    match tokio::time::timeout(Duration::from_secs(5), session.client.presence(&req)).await {
        Ok(Ok(_)) => tracing::info!("presence offline"),
        _ => tracing::warn!("could not tell the relay we went offline"),
    }
}
