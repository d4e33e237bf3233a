//! Presence: online/offline, device and session metadata, free-text status.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/webchat/presence`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PresenceRequest {
    /// Must be the caller's own address when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_address: Option<String>,
    /// When given and not empty, also renames the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `false` marks the identity offline at once. Defaults to `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_channel: Option<String>,
    /// Free text such as "working"; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceResponse {
    pub ok: bool,
    pub online: bool,
    /// Seconds until this presence lapses to offline unless refreshed.
    pub ttl: i64,
}
