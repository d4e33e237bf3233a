//! Groups: create, list, members, leave, join, join requests.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody, PathParams};
use super::store::NewGroup;
use crate::api::address::{group_target, normalize_address};
use crate::api::groups::{
    AddMemberRequest, CreateGroupRequest, CreateGroupResponse, GroupListResponse,
    JoinRequestsResponse, JoinResponse, MembersResponse,
};
use crate::api::{ErrorBody, ErrorCode, OkResponse, now_millis};

/// Longest group name.
const MAX_GROUP_NAME: usize = 80;

/// Accepts `grp_…` or `group:grp_…`.
fn group_id(raw: &str) -> ApiResult<String> {
    let id = group_target(raw.trim()).unwrap_or(raw.trim());
    let ok = id.strip_prefix("grp_").is_some_and(|h| {
        !h.is_empty() && h.len() <= 32 && h.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(id.to_string())
    } else {
        Err(ApiError::not_found(
            ErrorCode::NotFound,
            format!("{raw:?} is not a group id"),
        ))
    }
}

fn address(raw: &str) -> ApiResult<String> {
    normalize_address(raw).map_err(|e| ApiError::bad_request(ErrorCode::InvalidAddress, e))
}

/// Creates a chat or stream group; the creator is its admin (a stream group's writer).
#[utoipa::path(post, path = "/api/v1/webchat/groups", tag = "groups",
    security(("session" = [])),
    request_body = CreateGroupRequest,
    responses(
        (status = 200, body = CreateGroupResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<CreateGroupRequest>,
) -> ApiResult<Json<CreateGroupResponse>> {
    let name = req.name.trim().to_string();
    if name.is_empty()
        || name.chars().count() > MAX_GROUP_NAME
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("a group name is 1-{MAX_GROUP_NAME} characters"),
        ));
    }
    let visibility = req
        .visibility
        .as_deref()
        .unwrap_or("public")
        .trim()
        .to_ascii_lowercase();
    if !matches!(visibility.as_str(), "public" | "private") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "visibility is public or private",
        ));
    }
    let mode = req
        .mode
        .as_deref()
        .unwrap_or("chat")
        .trim()
        .to_ascii_lowercase();
    if !matches!(mode.as_str(), "chat" | "stream") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "mode is chat or stream",
        ));
    }
    let mut raw = [0u8; 8];
    rand::fill(&mut raw);
    let public_id = format!("grp_{}", hex::encode(raw));
    state
        .store
        .create_group(NewGroup {
            public_id: public_id.clone(),
            creator_id: session.user.id,
            name,
            visibility,
            mode,
            created_at: now_millis(),
        })
        .await?;
    Ok(Json(CreateGroupResponse {
        ok: true,
        group_id: public_id,
    }))
}

/// Your groups and every public group.
#[utoipa::path(get, path = "/api/v1/webchat/groups", tag = "groups",
    security(("session" = [])),
    responses((status = 200, body = GroupListResponse), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<GroupListResponse>> {
    let groups = state.store.groups_for(session.user.id).await?;
    Ok(Json(GroupListResponse { ok: true, groups }))
}

/// Adds a member (admins only).
#[utoipa::path(post, path = "/api/v1/webchat/groups/{group_id}/members", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    request_body = AddMemberRequest,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<AddMemberRequest>,
) -> ApiResult<Json<OkResponse>> {
    let group = group_id(&id)?;
    let who = address(&req.member_address)?;
    let role = req.role.as_deref().unwrap_or("member");
    if !matches!(role, "member" | "admin") {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "role is member or admin",
        ));
    }
    state
        .store
        .add_member(session.user.id, &group, &who, role, now_millis())
        .await?;
    Ok(Json(OkResponse::ok()))
}

/// Who is in a group (members only, for private groups).
#[utoipa::path(get, path = "/api/v1/webchat/groups/{group_id}/members", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    responses(
        (status = 200, body = MembersResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn members(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<MembersResponse>> {
    let group = group_id(&id)?;
    let members = state.store.members(session.user.id, &group).await?;
    Ok(Json(MembersResponse { ok: true, members }))
}

/// Removes a member (admins remove anyone; anyone removes themself).
#[utoipa::path(delete, path = "/api/v1/webchat/groups/{group_id}/members/{address}", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path), ("address" = String, Path)),
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams((id, who)): PathParams<(String, String)>,
) -> ApiResult<Json<OkResponse>> {
    let group = group_id(&id)?;
    let who = address(&who)?;
    state
        .store
        .remove_member(session.user.id, &group, &who)
        .await?;
    Ok(Json(OkResponse::ok()))
}

/// Leaves a group.
#[utoipa::path(post, path = "/api/v1/webchat/groups/{group_id}/leave", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    responses(
        (status = 200, body = OkResponse),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn leave(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<OkResponse>> {
    let group = group_id(&id)?;
    state
        .store
        .remove_member(session.user.id, &group, &session.user.chat_address)
        .await?;
    Ok(Json(OkResponse::ok()))
}

async fn join_inner(state: &AppState, user: i64, id: &str) -> ApiResult<Json<JoinResponse>> {
    let group = group_id(id)?;
    let joined = state
        .store
        .join_or_request(user, &group, now_millis())
        .await?;
    Ok(Json(JoinResponse {
        ok: true,
        joined,
        pending: !joined,
    }))
}

/// Joins a public group; for a private one, asks to join.
#[utoipa::path(post, path = "/api/v1/webchat/groups/{group_id}/join", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    responses(
        (status = 200, body = JoinResponse),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn join(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<JoinResponse>> {
    join_inner(&state, session.user.id, &id).await
}

/// Asks to join (a private group); joins a public one at once.
#[utoipa::path(post, path = "/api/v1/webchat/groups/{group_id}/join-requests", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    responses(
        (status = 200, body = JoinResponse),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn request_join(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<JoinResponse>> {
    join_inner(&state, session.user.id, &id).await
}

/// Pending join requests (admins only).
#[utoipa::path(get, path = "/api/v1/webchat/groups/{group_id}/join-requests", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path)),
    responses(
        (status = 200, body = JoinRequestsResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn join_requests(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<JoinRequestsResponse>> {
    let group = group_id(&id)?;
    let requests = state.store.join_requests(session.user.id, &group).await?;
    Ok(Json(JoinRequestsResponse { ok: true, requests }))
}

/// Accepts or rejects a join request (admins only).
#[utoipa::path(post, path = "/api/v1/webchat/groups/{group_id}/join-requests/{address}/{decision}", tag = "groups",
    security(("session" = [])),
    params(("group_id" = String, Path), ("address" = String, Path),
           ("decision" = String, Path, description = "accept or reject")),
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn decide(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams((id, who, decision)): PathParams<(String, String, String)>,
) -> ApiResult<Json<OkResponse>> {
    let group = group_id(&id)?;
    let who = address(&who)?;
    let accept = match decision.as_str() {
        "accept" => true,
        "reject" => false,
        _ => {
            return Err(ApiError::not_found(
                ErrorCode::NotFound,
                "use …/accept or …/reject",
            ));
        }
    };
    state
        .store
        .decide_join(session.user.id, &group, &who, accept, now_millis())
        .await?;
    Ok(Json(OkResponse::ok()))
}
