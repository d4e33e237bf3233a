//! The daemon: keeps a persona online, receives into `inbox.jsonl` with a durable cursor, and
//! wakes a batch runner once per inbound message through the `--on-message` hook.

pub mod control;
pub mod health;
pub mod hooks;
pub mod inbox;
pub mod journal;
pub mod launch;
pub mod paths;
pub mod presence;
pub mod protocol;
pub mod receiver;
pub mod replies;
pub mod runner;
pub mod service;
pub mod session;
pub mod settings;
pub mod state;
pub mod supervisor;

use crate::private_fs::FsError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Failed(String),
}
