//! Where the MCP tools get chat from: the relay directly (claiming with the persona's session),
//! or, when a daemon runs for the persona, the daemon's inbox through its control socket, so
//! the daemon and the MCP server share one cursor and nothing is read twice or skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Method;

use crate::api::messages::{EventType, Message, PollRequest, SendRequest};
use crate::api::{FREE_PHONE_ID, PCHAT_CHANNEL};
use crate::client::{ClientError, Persona, RelayClient};
use crate::daemon::control;
use crate::daemon::protocol::ClaimBody;
use crate::hosts::prompt::Entry;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Relay(#[from] ClientError),
    #[error(transparent)]
    Daemon(#[from] control::ControlError),
    #[error("{0}")]
    Input(String),
}

/// The daemon running for the persona, when there is one.
#[derive(Debug, Clone)]
pub struct DaemonLink {
    pub task: String,
    pub socket: PathBuf,
}

/// A persona's view of the relay, for the tools.
#[derive(Clone)]
pub struct Chat {
    pub client: RelayClient,
    pub me: String,
    pub daemon: Option<DaemonLink>,
}

impl Chat {
    pub fn for_persona(p: &Persona, daemon: Option<DaemonLink>) -> Result<Chat, ChatError> {
        Ok(Chat {
            client: RelayClient::new(&p.relay)?.with_token(p.token.clone().unwrap_or_default()),
            me: p.chat_address.clone(),
            daemon,
        })
    }

    pub fn send_request(&self, to: &str, text: String, reply_to: Option<String>) -> SendRequest {
        SendRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            channel: Some(PCHAT_CHANNEL.into()),
            subject: None,
            source: Some(self.me.clone()),
            to: to.to_string(),
            text: Some(text),
            reply_to,
            attachments: None,
            client_message_id: Some(crate::client::new_client_message_id("mcp")),
        }
    }

    /// New messages since this server's cursor (claiming them), waiting up to `wait` for one.
    pub async fn claim(&self, limit: u32, wait: Duration) -> Result<Vec<Entry>, ChatError> {
        match &self.daemon {
            Some(d) => {
                let body = ClaimBody {
                    limit: Some(limit),
                    wait_secs: Some(wait.as_secs_f64()),
                    through: None,
                };
                daemon_records(d, "/claim", body).await
            }
            // Without `after`, the relay hands over what follows the session's claim cursor
            // and moves it.
            None => self.relay_poll(limit, None, wait).await,
        }
    }

    async fn relay_poll(
        &self,
        limit: u32,
        after: Option<String>,
        wait: Duration,
    ) -> Result<Vec<Entry>, ChatError> {
        let req = PollRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            chat_address: Some(self.me.clone()),
            limit: Some(limit),
            after,
            wait: Some(wait.as_secs_f64()),
        };
        let resp = self.client.poll(&req).await?;
        Ok(resp
            .messages
            .into_iter()
            .filter(shown)
            .map(|message| Entry {
                message,
                attachment_paths: Vec::new(),
            })
            .collect())
    }

    /// What is waiting, without claiming it (the inbox resource).
    pub async fn peek(&self, limit: u32) -> Result<Vec<Entry>, ChatError> {
        if let Some(d) = &self.daemon {
            let body = ClaimBody {
                limit: Some(limit),
                wait_secs: None,
                through: None,
            };
            return daemon_records(d, "/peek", body).await;
        }
        let claim = self.client.me().await?.claim_cursor;
        self.relay_poll(limit, Some(claim), Duration::ZERO).await
    }

    pub async fn history(&self, with: &str, limit: u32) -> Result<Vec<Entry>, ChatError> {
        Ok(self
            .client
            .history(with, None, limit)
            .await?
            .messages
            .into_iter()
            .map(|message| Entry {
                message,
                attachment_paths: Vec::new(),
            })
            .collect())
    }

    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, ChatError> {
        Ok(self
            .client
            .download_to(url, dest, 100 * 1024 * 1024)
            .await?)
    }
}

/// Inbox records from the daemon's `/claim` or `/peek`.
async fn daemon_records(
    d: &DaemonLink,
    path: &str,
    body: ClaimBody,
) -> Result<Vec<Entry>, ChatError> {
    let body = serde_json::to_value(body).map_err(|e| ChatError::Input(e.to_string()))?;
    let reply = control::request(&d.task, &d.socket, Method::POST, path, Some(body)).await?;
    Ok(reply
        .records
        .unwrap_or_default()
        .into_iter()
        .map(|r| Entry {
            message: r.message,
            attachment_paths: r.attachment_paths,
        })
        .filter(|e| shown(&e.message))
        .collect())
}

/// What a model is shown: messages, edits, deletions and captions (read receipts are noise).
fn shown(m: &Message) -> bool {
    !matches!(m.event_type, EventType::Read)
}
