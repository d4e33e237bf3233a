//! Receiving: long-polls with an explicit cursor, attachments saved under the task folder, each
//! batch handed to the journal (inbox, then cursor), then to the hook runner, then acknowledged
//! to the relay. A poll dropped in flight loses nothing: reads with `after` consume nothing.

use std::sync::Arc;
use std::time::Duration;

use super::health::Problem;
use super::journal::{Applied, Event, Incoming, cursor_value};
use super::protocol::Phase;
use super::runner::RunnerMsg;
use super::session::{Backoff, log_in, log_in_again};
use super::supervisor::{Daemon, PresenceWant};
use crate::api::FREE_PHONE_ID;
use crate::api::messages::{EventType, Message, PollRequest};
use crate::client::RelayClient;

/// Long-poll wait per request.
const POLL_WAIT_SECS: f64 = 25.0;
/// Most events taken per poll.
const POLL_LIMIT: u32 = 200;

/// Logs in, then receives until shutdown.
pub async fn receive(d: Arc<Daemon>) {
    let claim = match log_in(&d.settings, &d.sessions, &d.health, &d.shutdown).await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(msg) => {
            tracing::error!("login failed: {msg}");
            d.health.fail(msg.clone());
            let _ = tokio::fs::write(&d.paths.last_error, &msg).await;
            d.shutdown.cancel();
            return;
        }
    };
    let Some(session) = d.sessions.current() else {
        return;
    };
    let identity = session.identity();
    let saved = d.journal.snapshot();
    if saved.state.cursor.is_none() || saved.state.identity.as_deref() != Some(identity.as_str()) {
        // A new task (or identity) starts where the identity's claim stands: queued messages
        // wake it, history already read elsewhere does not.
        tracing::info!(cursor = %claim, "starting from the identity's claim cursor");
        let restart = Event::Restart {
            identity,
            cursor: claim,
        };
        if d.journal.apply(restart).await.is_none() {
            return;
        }
    }
    d.health.set_phase(Phase::Running);
    d.presence.send_replace(PresenceWant {
        online: true,
        working: false,
    });

    // Capped at 10 s: one request per 10 s costs a relay nothing, and recovery stays prompt.
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        if d.shutdown.is_cancelled() {
            return;
        }
        let Some(session) = d.sessions.current() else {
            return;
        };
        let cursor = d
            .journal
            .snapshot()
            .state
            .cursor
            .clone()
            .unwrap_or_else(|| "0".into());
        let req = PollRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            chat_address: Some(session.persona.chat_address.clone()),
            limit: Some(POLL_LIMIT),
            after: Some(cursor.clone()),
            wait: Some(POLL_WAIT_SECS),
        };
        let polled = tokio::select! {
            r = session.client.poll(&req) => r,
            _ = d.shutdown.cancelled() => return,
        };
        let resp = match polled {
            Ok(r) => r,
            Err(e) => {
                d.health.set_online(false);
                if e.is_auth() {
                    if log_in_again(&session, &d.sessions, &d.health).await {
                        continue;
                    }
                } else {
                    d.health.report(Problem::RelayUnreachable, e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => continue,
                    _ = d.shutdown.cancelled() => return,
                }
            }
        };
        backoff.reset();
        if d.health.relay_cut_off() {
            d.health.clear(Problem::RelayUnreachable);
            d.health.clear(Problem::SessionExpired);
            // Say "online" again now, not at the next refresh.
            d.presence.send_modify(|_| {});
        }
        if resp.messages.is_empty() || cursor_value(&resp.next_cursor) <= cursor_value(&cursor) {
            continue;
        }
        let mut incoming = Vec::with_capacity(resp.messages.len());
        for message in resp.messages {
            let attachment_paths = download_attachments(&d, &session.client, &message).await;
            incoming.push(Incoming {
                message,
                attachment_paths,
            });
        }
        let received = Event::Received {
            incoming,
            next_cursor: resp.next_cursor.clone(),
        };
        let Some(Applied::Placed(placed)) = d.journal.apply(received).await else {
            return;
        };
        if !d.hand_to_runner(RunnerMsg::Placed(placed)) {
            return;
        }
        // The relay's claim position (best effort: the inbox already holds them).
        let client = session.client.clone();
        let acked = resp.next_cursor;
        tokio::spawn(async move {
            if let Err(e) = client.ack(&acked).await {
                tracing::debug!("ack failed (harmless): {e}");
            }
        });
    }
}

/// Saves a message's attachments under `attachments/<message_id>/` (each up to the size cap)
/// and returns their local paths, in order ("" where a download failed).
async fn download_attachments(d: &Daemon, client: &RelayClient, m: &Message) -> Vec<String> {
    if m.event_type != EventType::Message || m.attachments.is_empty() {
        return Vec::new();
    }
    let safe_id: String = m
        .message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let dir = d.paths.attachments.join(safe_id);
    let made = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::private_fs::private_dir(&dir)).await
    };
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("cannot keep attachments: {e}");
            return vec![String::new(); m.attachments.len()];
        }
        Err(e) => {
            tracing::warn!("cannot keep attachments: {e}");
            return vec![String::new(); m.attachments.len()];
        }
    }
    let mut used = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, a) in m.attachments.iter().enumerate() {
        let mut name = crate::api::files::sanitize_file_name(&a.name);
        if !used.insert(name.clone()) {
            name = format!("{i}-{name}");
            used.insert(name.clone());
        }
        let dest = dir.join(&name);
        match client
            .download_to(&a.url, &dest, d.settings.attachment_cap_bytes)
            .await
        {
            Ok(_) => out.push(dest.display().to_string()),
            Err(e) => {
                tracing::warn!(file = %a.name, "attachment not saved: {e}");
                out.push(String::new());
            }
        }
    }
    out
}
