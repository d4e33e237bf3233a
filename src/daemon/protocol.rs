//! The control plane's wire types, shared by the daemon and the CLI that talks to it over the
//! task's unix socket (HTTP/1.1). Every reply carries the protocol version.

use serde::{Deserialize, Serialize};

use super::state::{DeadLetter, HookResult};

/// Bumped whenever a request or reply changes shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Logging in / reaching the relay for the first time.
    Starting,
    /// Receiving.
    Running,
    /// Gave up (a bad identity, say); see `error`.
    Failed,
    /// Shutting down.
    Stopping,
}

/// A problem the daemon had (or has): relay unreachable, disk full, session expired…
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub what: String,
    /// The problem's stable name (relay_unreachable, session_expired, cannot_write_inbox,
    /// cannot_save_state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub since: String,
    /// When it cleared; `None` while it lasts.
    pub until: Option<String>,
}

/// The hook run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningHook {
    pub message_id: String,
    pub seq: u64,
    pub batch: usize,
    pub attempt: u32,
    pub pid: Option<u32>,
    pub started_at: String,
}

/// `GET /status`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub protocol: u32,
    pub version: String,
    pub task: String,
    pub pid: u32,
    pub phase: Phase,
    pub relay: String,
    pub chat_address: String,
    /// The relay answers and presence is online.
    pub online: bool,
    /// The last problem reaching the relay or storing messages, if it persists.
    pub problem: Option<String>,
    /// Its stable name (see `Incident::kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_kind: Option<String>,
    /// Recent problems, oldest first, with when they started and cleared.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Set when the daemon failed (phase "failed").
    pub error: Option<String>,
    pub cursor: Option<String>,
    pub inbox_path: String,
    pub inbox_records: u64,
    pub inbox_bytes: u64,
    pub queue_depth: usize,
    pub running_hook: Option<RunningHook>,
    pub last_hook: Option<HookResult>,
    /// Hook runs that finished (every attempt) and how many failed, since the task began.
    #[serde(default)]
    pub hook_runs: u64,
    #[serde(default)]
    pub hook_failures: u64,
    pub dead_letters: Vec<DeadLetter>,
    /// Replies decided but not yet taken by the relay.
    #[serde(default)]
    pub outbox: usize,
    /// Inbox records through this seq were handed to a live session (MCP, host hook), so no
    /// batch turn runs for them.
    #[serde(default)]
    pub claimed_seq: u64,
    pub hooks_paused: bool,
    pub hook: Option<String>,
    pub on_busy: String,
    pub reply: bool,
    /// Peers the loop guard stopped replying to.
    pub loop_guarded: Vec<String>,
    pub started_at: String,
    pub uptime_secs: u64,
    pub socket: String,
}

/// `POST /send`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBody {
    pub to: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub attachments: Option<Vec<crate::api::messages::AttachmentRef>>,
    /// Makes the send idempotent (see `SendRequest::client_message_id`); one is made when
    /// missing.
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// `POST /history`: a conversation as the relay has it (the agent's own messages included).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryBody {
    /// A chat address or `group:grp_…`.
    pub with: String,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `POST /claim` and `POST /peek`: inbox records a live host or an MCP server takes over
/// (claim marks them, so the daemon's hook does not run for them and no one takes them twice).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClaimBody {
    /// At most this many (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Wait up to this long for a first record (claim only; default 0).
    #[serde(default)]
    pub wait_secs: Option<f64>,
    /// Claim only records up to this seq: the acknowledgement of a `/peek` whose records
    /// were shown (so a hook killed before it printed them loses nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
}

/// Every control reply: the protocol version, ok, and what the request returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub protocol: u32,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub status: Option<Box<Status>>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub retried: Option<usize>,
    /// `/history`: the conversation, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<crate::api::messages::Message>>,
    /// `/claim` and `/peek`: inbox records, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<super::inbox::InboxRecord>>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply {
            protocol: PROTOCOL_VERSION,
            ok: true,
            error: None,
            status: None,
            message_id: None,
            retried: None,
            messages: None,
            records: None,
        }
    }
    pub fn err(e: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(e.into()),
            ..Reply::ok()
        }
    }
}
