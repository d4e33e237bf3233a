//! Groups: chat groups and one-writer stream groups, members and join requests.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Kind;

/// `POST /api/v1/webchat/groups`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateGroupRequest {
    pub name: String,
    /// public (listed, anyone may join) or private (join by request or invitation). Default public.
    #[serde(default)]
    pub visibility: Option<String>,
    /// chat (everyone writes) or stream (only admins write; members observe). Default chat.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateGroupResponse {
    pub ok: bool,
    pub group_id: String,
}

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    pub group_id: String,
    pub name: String,
    pub visibility: String,
    pub mode: String,
    /// Your role: admin, member, or null when you are not a member.
    pub role: Option<String>,
    pub member_count: u32,
    pub created_by: String,
    pub created_at: String,
    /// Whether you may post (members of chat groups; admins of stream groups).
    pub can_post: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupListResponse {
    pub ok: bool,
    pub groups: Vec<GroupInfo>,
}

/// `POST /api/v1/webchat/groups/{id}/members`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMemberRequest {
    pub member_address: String,
    /// admin or member (default member). Only admins may add admins.
    #[serde(default)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub chat_address: String,
    pub display_name: String,
    pub kind: Kind,
    pub role: String,
    pub joined_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembersResponse {
    pub ok: bool,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JoinRequest {
    pub chat_address: String,
    pub display_name: String,
    pub kind: Kind,
    pub requested_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinRequestsResponse {
    pub ok: bool,
    pub requests: Vec<JoinRequest>,
}

/// `{"ok":true,"joined":…}`: joined at once (public) or a request filed (private).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinResponse {
    pub ok: bool,
    pub joined: bool,
    pub pending: bool,
}
