//! Presence reports and the directory.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::clean_name;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody, Query};
use super::store::PresenceUpdate;
use crate::api::directory::{DirectoryQuery, DirectoryResponse};
use crate::api::presence::{PresenceRequest, PresenceResponse};
use crate::api::{ErrorBody, ErrorCode, now_millis};

/// Longest device, session or channel name.
const MAX_LABEL_CHARS: usize = 120;
/// Longest free-text status.
const MAX_STATUS_CHARS: usize = 200;

fn label(field: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.chars().count() > max => Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("{field} is over {max} characters"),
        )),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("{field} may not hold control characters"),
        )),
        other => Ok(other.map(|s| s.trim().to_string())),
    }
}

/// Rejects a `chat_address` that is not the caller's own.
pub(crate) fn check_own_address(claimed: Option<&str>, own: &str) -> ApiResult<()> {
    match claimed.map(|a| a.trim().to_ascii_lowercase()) {
        Some(a) if !a.is_empty() && a != own => Err(ApiError::forbidden(
            ErrorCode::AddressMismatch,
            format!("chat_address {a:?} is not yours; this session belongs to {own:?}"),
        )),
        _ => Ok(()),
    }
}

/// Marks the caller online (or offline with `visible: false`) with session metadata.
#[utoipa::path(post, path = "/api/v1/webchat/presence", tag = "presence",
    security(("session" = [])),
    request_body = PresenceRequest,
    responses(
        (status = 200, body = PresenceResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn presence(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<PresenceRequest>,
) -> ApiResult<Json<PresenceResponse>> {
    check_own_address(req.chat_address.as_deref(), &session.user.chat_address)?;
    let visible = req.visible.unwrap_or(true);
    let update = PresenceUpdate {
        visible,
        display_name: clean_name(req.display_name.as_deref())?,
        device_name: label("device_name", req.device_name, MAX_LABEL_CHARS)?,
        session_name: label("session_name", req.session_name, MAX_LABEL_CHARS)?,
        listen_channel: label("listen_channel", req.listen_channel, MAX_LABEL_CHARS)?,
        status: label("status", req.status, MAX_STATUS_CHARS)?,
    };
    let renamed = update.display_name.is_some();
    state
        .store
        .set_presence(session.user.id, update, now_millis())
        .await?;
    if renamed {
        state.forget_sessions_of(session.user.id);
    }
    Ok(Json(PresenceResponse {
        ok: true,
        online: visible,
        ttl: state.config.presence_ttl_secs,
    }))
}

/// Searches public identities by display name or chat address.
#[utoipa::path(get, path = "/api/v1/webchat/directory", tag = "presence",
    security(("session" = [])),
    params(DirectoryQuery),
    responses(
        (status = 200, body = DirectoryResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ))]
pub async fn directory(
    State(state): State<AppState>,
    Auth(_session): Auth,
    Query(q): Query<DirectoryQuery>,
) -> ApiResult<Json<DirectoryResponse>> {
    let needle = q.q.unwrap_or_default();
    if needle.chars().count() > 200 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "q is over 200 characters",
        ));
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let fresh_after = now_millis() - state.config.presence_ttl_secs * 1000;
    let results = state.store.directory(&needle, limit, fresh_after).await?;
    Ok(Json(DirectoryResponse { ok: true, results }))
}
