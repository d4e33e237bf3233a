//! Sends what the runner queued in the journal's outbox, in order, each with its client id: a
//! send repeated after a crash (or after an answer lost on the network) is stored once by the
//! relay. Only when the relay has taken a message does the journal drop it.

use std::sync::Arc;
use std::time::Duration;

use super::journal::Event;
use super::session::Backoff;
use super::state::Outgoing;
use super::supervisor::Daemon;
use crate::api::messages::SendRequest;
use crate::api::{FREE_PHONE_ID, PCHAT_CHANNEL};

fn request(o: &Outgoing, source: &str) -> SendRequest {
    SendRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        channel: Some(PCHAT_CHANNEL.into()),
        subject: None,
        source: Some(source.to_string()),
        to: o.to.clone(),
        text: Some(o.text.clone()),
        reply_to: o.reply_to.clone(),
        attachments: None,
        client_message_id: Some(o.client_id.clone()),
    }
}

/// Sends the outbox until shutdown; what is left waits for the next start.
pub async fn run(d: Arc<Daemon>) {
    let mut snapshots = d.journal.subscribe();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let next = snapshots.borrow_and_update().state.outbox.first().cloned();
        let Some(out) = next else {
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                _ = d.shutdown.cancelled() => return,
            }
            continue;
        };
        let Some(session) = d.sessions.wait(&d.shutdown).await else {
            return;
        };
        let req = request(&out, &session.persona.chat_address);
        let sent = tokio::select! {
            r = session.client.send(&req) => r,
            _ = d.shutdown.cancelled() => return,
        };
        match sent {
            Ok(r) => {
                crate::failpoints::hit("daemon-after-reply-sent");
                tracing::info!(
                    message_id = %r.message_id,
                    to = %out.to,
                    duplicate = r.duplicate,
                    "{:?} sent",
                    out.kind
                );
                backoff.reset();
            }
            Err(e) if e.is_transient() || e.is_auth() => {
                // The receiver logs in again on auth failures; try again after a pause.
                tracing::warn!("{:?} to {} not sent yet: {e}", out.kind, out.to);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => {}
                    _ = d.shutdown.cancelled() => return,
                }
                continue;
            }
            Err(e) => {
                // Refused for good (the peer left, say): dropped, with a log line why.
                tracing::warn!("{:?} to {} refused, dropped: {e}", out.kind, out.to);
            }
        }
        let done = Event::Sent {
            client_id: out.client_id,
        };
        if d.journal.apply(done).await.is_none() {
            return;
        }
    }
}
