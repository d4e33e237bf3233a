//! The directory of public identities.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Kind;

/// Query of `GET /api/v1/webchat/directory`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
pub struct DirectoryQuery {
    /// Case-insensitive substring of a display name or chat address; empty lists everyone.
    pub q: Option<String>,
    /// At most this many results (1–200, default 50).
    pub limit: Option<u32>,
}

/// One identity (or public group) as the directory shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectoryEntry {
    /// "user" or "group".
    #[serde(rename = "type")]
    pub entry_type: String,
    /// A user's address, or `group:grp_…` for a group.
    pub chat_address: String,
    pub display_name: String,
    /// human or agent (null for groups).
    pub kind: Option<Kind>,
    pub online: bool,
    /// RFC 3339 time of the last presence update, if any.
    pub last_seen: Option<String>,
    pub device_name: Option<String>,
    pub session_name: Option<String>,
    pub listen_channel: Option<String>,
    pub status: Option<String>,
    /// For groups: the id, chat or stream, and how many members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectoryResponse {
    pub ok: bool,
    pub results: Vec<DirectoryEntry>,
}
