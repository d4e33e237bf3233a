//! The daemon's durable progress (`state.json`, replaced atomically): the relay cursor of what
//! is safely in the inbox, how far the hook runner got, dead letters, and the replies decided
//! but not yet taken by the relay. Only the journal writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inbox::InboxRecord;
use crate::private_fs::{self, FsError};

/// A message whose hook failed every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub record: InboxRecord,
    pub error: String,
    pub attempts: u32,
    pub at: String,
}

/// How the last hook run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookResult {
    pub message_id: String,
    pub seq: u64,
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub attempt: u32,
    pub duration_ms: u64,
    pub finished_at: String,
}

/// What an outgoing message is, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutgoingKind {
    /// The hook's answer (--reply).
    Reply,
    /// The loop guard telling a peer that automatic replies stopped.
    LoopGuardNotice,
}

/// A message the daemon decided to send. It is saved before it is sent, with its client id,
/// so sending it again after a crash stores nothing twice at the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub client_id: String,
    pub kind: OutgoingKind,
    pub to: String,
    pub text: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    pub queued_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Relay cursor up to which every event is in inbox.jsonl. `None` until the first start
    /// has asked the relay where this identity's claim stands.
    pub cursor: Option<String>,
    /// Relay and address the cursor belongs to; another identity starts afresh.
    #[serde(default)]
    pub identity: Option<String>,
    /// The inbox seq of the last record `cursor` covers. Records after it were appended but
    /// the cursor not yet saved (a crash between the two); they belong to this identity, so
    /// the cursor may catch up with them. `None` in states written before it existed.
    #[serde(default)]
    pub cursor_seq: Option<u64>,
    /// Last inbox seq whose hook has finished (succeeded or dead-lettered)…
    #[serde(default)]
    pub hook_seq: u64,
    /// …and the byte offset just after that record's line.
    #[serde(default)]
    pub hook_offset: u64,
    #[serde(default)]
    pub dead: Vec<DeadLetter>,
    #[serde(default)]
    pub last_hook: Option<HookResult>,
    /// Hook runs that finished (every attempt), and how many of them failed, since the task
    /// was first started.
    #[serde(default)]
    pub hook_runs: u64,
    #[serde(default)]
    pub hook_failures: u64,
    /// Decided, not yet acknowledged by the relay; sent in order.
    #[serde(default)]
    pub outbox: Vec<Outgoing>,
    /// The last inbox seq a live host or an MCP server claimed (their hooks do not run)…
    #[serde(default)]
    pub claimed_seq: u64,
    /// …and the byte offset just after it.
    #[serde(default)]
    pub claimed_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "daemon state {path} is damaged ({why}); move it away to start over (the inbox is kept)"
    )]
    Damaged { path: PathBuf, why: String },
}

impl DaemonState {
    pub fn load(path: &Path) -> Result<DaemonState, StateError> {
        match private_fs::read_optional(path)? {
            None => Ok(DaemonState::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
                path: path.to_path_buf(),
                why: e.to_string(),
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(self).map_err(|e| StateError::Damaged {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        private_fs::atomic_write(path, &bytes)?;
        Ok(())
    }
}
