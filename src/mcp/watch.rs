//! Resource subscriptions: a long-poll (reading, never claiming) that tells the host when the
//! inbox or a conversation changed.

use rmcp::RoleServer;
use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::service::Peer;

use super::chat::Chat;
use crate::api::messages::PollRequest;

/// Watches from `after` (the stream head when the host subscribed, read before the subscribe
/// call answered, so anything later is news).
pub async fn watch(chat: Chat, peer: Peer<RoleServer>, mut after: String) {
    loop {
        let req = PollRequest {
            chat_address: Some(chat.me.clone()),
            after: Some(after.clone()),
            wait: Some(25.0),
            limit: Some(200),
            ..Default::default()
        };
        let got = match chat.client.poll(&req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("resource watch: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        if got.messages.is_empty() {
            continue;
        }
        after = got.next_cursor.clone();
        let mut uris = vec!["webchat://inbox".to_string()];
        for m in &got.messages {
            let with = match &m.group_id {
                Some(g) => format!("group:{g}"),
                None if m.from == chat.me => m.to.clone(),
                None => m.from.clone(),
            };
            let uri = format!("webchat://conversation/{with}");
            if !uris.contains(&uri) {
                uris.push(uri);
            }
        }
        for uri in uris {
            if peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
                .is_err()
            {
                return; // the host went away
            }
        }
    }
}
