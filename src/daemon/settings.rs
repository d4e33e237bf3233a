//! A task's saved settings: a later `daemon start --task T` with no flags starts it the same
//! way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::IdentitySpec;
use crate::private_fs::{self, FsError};

/// What the hook runner does with messages that arrive while a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyPolicy {
    /// One run per message, in order, one at a time (durable FIFO).
    #[default]
    Queue,
    /// Everything pending goes to the next single run.
    Coalesce,
}

/// Who the task is on the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a settings value read once at start; size is irrelevant
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Identity {
    /// An existing local persona (email or chat address).
    Persona { who: String },
    /// Created or reused from identity flags, like `gts-webchat cli EMAIL …`.
    Flags {
        email: String,
        name: Option<String>,
        persona: Option<String>,
        computer: Option<String>,
        session_name: Option<String>,
        chat_address: Option<String>,
        listen_channel: Option<String>,
        kind: Option<crate::api::Kind>,
        relay: Option<String>,
        site: Option<String>,
        relay_mode: Option<String>,
    },
}

impl Identity {
    pub fn spec(&self) -> Option<IdentitySpec> {
        match self {
            Identity::Persona { .. } => None,
            Identity::Flags {
                email,
                name,
                persona,
                computer,
                session_name,
                chat_address,
                listen_channel,
                kind,
                relay,
                site,
                relay_mode,
            } => Some(IdentitySpec {
                email: email.clone(),
                name: name.clone(),
                persona: persona.clone(),
                computer: computer.clone(),
                session_name: session_name.clone(),
                chat_address: chat_address.clone(),
                listen_channel: listen_channel.clone(),
                kind: *kind,
                relay: relay.clone(),
                site: site.clone(),
                relay_mode: relay_mode.clone(),
                code: None,
            }),
        }
    }
}

/// The program run per inbound message, never through a shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookSettings {
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSettings {
    pub identity: Identity,
    /// Relay override for a persona identity (flags carry their own).
    #[serde(default)]
    pub relay: Option<String>,
    #[serde(default)]
    pub hook: Option<HookSettings>,
    #[serde(default)]
    pub on_busy: BusyPolicy,
    /// Send the hook's stdout back to the sender as a reply.
    #[serde(default)]
    pub reply: bool,
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout_secs: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Loop guard: at most this many automatic replies to one peer…
    #[serde(default = "default_reply_limit")]
    pub reply_limit: u32,
    /// …within this many seconds.
    #[serde(default = "default_reply_window")]
    pub reply_window_secs: u64,
    /// How long `stop` lets a running hook finish before TERM.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
    /// Largest inbound attachment the daemon downloads, in bytes.
    #[serde(default = "default_attachment_cap")]
    pub attachment_cap_bytes: u64,
    /// A stream group (`group:grp_…`) where run-host posts a live status of each turn.
    #[serde(default)]
    pub publish: Option<String>,
}

fn default_hook_timeout() -> u64 {
    600
}
fn default_max_attempts() -> u32 {
    3
}
fn default_reply_limit() -> u32 {
    20
}
fn default_reply_window() -> u64 {
    600
}
fn default_stop_grace() -> u64 {
    10
}
fn default_attachment_cap() -> u64 {
    50 * 1024 * 1024
}

impl TaskSettings {
    pub fn new(identity: Identity) -> TaskSettings {
        TaskSettings {
            identity,
            relay: None,
            hook: None,
            on_busy: BusyPolicy::Queue,
            reply: false,
            hook_timeout_secs: default_hook_timeout(),
            max_attempts: default_max_attempts(),
            reply_limit: default_reply_limit(),
            reply_window_secs: default_reply_window(),
            stop_grace_secs: default_stop_grace(),
            attachment_cap_bytes: default_attachment_cap(),
            publish: None,
        }
    }

    pub fn hook_timeout(&self) -> Duration {
        Duration::from_secs(self.hook_timeout_secs.max(1))
    }

    pub fn load(path: &Path) -> Result<Option<TaskSettings>, SettingsError> {
        match private_fs::read_optional(path)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| SettingsError::Damaged {
                        path: path.to_path_buf(),
                        why: e.to_string(),
                    })
            }
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| SettingsError::Damaged {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        private_fs::atomic_write(path, &bytes)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "task settings {path} are damaged ({why}); delete the file and start the task with its flags"
    )]
    Damaged { path: PathBuf, why: String },
}
