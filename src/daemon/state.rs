//! The daemon's durable progress (`state.json`, replaced atomically): the relay cursor of what
//! is safely in the inbox, how far the hook runner got, and dead letters.

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Relay cursor up to which every event is in inbox.jsonl. `None` until the first start
    /// has asked the relay where this identity's claim stands.
    pub cursor: Option<String>,
    /// Relay and address the cursor belongs to; another identity starts afresh.
    #[serde(default)]
    pub identity: Option<String>,
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
