//! Sending messages and polling for them (plain, claim and long-poll).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use tokio::time::Instant;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody};
use super::presence::check_own_address;
use super::store::{NewMessage, Target};
use crate::api::address::{group_target, normalize_address};
use crate::api::messages::{
    AckRequest, AckResponse, PollRequest, PollResponse, SendRequest, SendResponse,
};
use crate::api::{
    ErrorBody, ErrorCode, MAX_POLL_WAIT_SECS, MAX_TEXT_BYTES, PCHAT_CHANNEL, now_millis,
    rfc3339_from_millis,
};

/// Longest id a client may quote in `reply_to`.
const MAX_ID_CHARS: usize = 64;

pub(crate) fn new_message_id() -> String {
    let mut raw = [0u8; 12];
    rand::fill(&mut raw);
    format!("msg_{}", hex::encode(raw))
}

/// Sends a message to a chat address as the session's identity.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages",
    security(("session" = [])),
    request_body = SendRequest,
    responses(
        (status = 200, body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<SendRequest>,
) -> ApiResult<Json<SendResponse>> {
    let me = &session.user;
    if let Some(channel) = req.channel.as_deref().map(str::trim)
        && !channel.is_empty()
        && channel != PCHAT_CHANNEL
    {
        return Err(ApiError::bad_request(
            ErrorCode::ChannelUnavailable,
            format!(
                "channel {channel:?} needs a PhoneRelay bridge, which this relay does not have; use \"pchat\""
            ),
        ));
    }
    if let Some(source) = req.source.as_deref().map(|s| s.trim().to_ascii_lowercase())
        && !source.is_empty()
        && source != me.chat_address
    {
        return Err(ApiError::forbidden(
            ErrorCode::SenderMismatch,
            format!(
                "source {source:?} is not you; this session sends as {:?}",
                me.chat_address
            ),
        ));
    }
    let to = req.to.trim();
    let target =
        match group_target(to) {
            Some(group) => Target::Group(group.to_string()),
            None => Target::Address(normalize_address(to).map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidAddress, format!("to: {e}"))
            })?),
        };
    let text = req.text.unwrap_or_default();
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::too_large(format!(
            "text is {} bytes; the limit is {} KiB",
            text.len(),
            MAX_TEXT_BYTES / 1024
        )));
    }
    let attachments = req.attachments.unwrap_or_default();
    if text.trim().is_empty() && attachments.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyMessage,
            "the message has no text and no attachments",
        ));
    }
    let reply_to = req
        .reply_to
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reply_to.as_ref().is_some_and(|r| r.len() > MAX_ID_CHARS) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "reply_to is not a message id",
        ));
    }
    let sent = state
        .store
        .send(NewMessage {
            public_id: new_message_id(),
            sender_id: me.id,
            target,
            text,
            reply_to,
            attachments,
            created_at: now_millis(),
        })
        .await?;
    Ok(Json(SendResponse {
        ok: true,
        message_id: sent.public_id,
        created_at: rfc3339_from_millis(sent.created_at),
    }))
}

fn parse_cursor(raw: &str) -> ApiResult<u64> {
    raw.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidCursor,
            format!("{raw:?} is not a cursor this relay issued; use \"0\" or a next_cursor from an earlier poll"),
        )
    })
}

/// Reads the caller's stream: with `after`, without consuming; without it, claiming with the
/// session's cursor. With `wait`, holds the request open until something arrives.
#[utoipa::path(post, path = "/api/v1/webchat/poll", tag = "messages",
    security(("session" = [])),
    request_body = PollRequest,
    responses(
        (status = 200, body = PollResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn poll(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    let me = &session.user;
    check_own_address(req.chat_address.as_deref(), &me.chat_address)?;
    let limit = req.limit.unwrap_or(20).clamp(1, 500);
    let wait = req.wait.unwrap_or(0.0);
    if !wait.is_finite() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "wait must be a number of seconds",
        ));
    }
    let wait = Duration::from_secs_f64(wait.clamp(0.0, MAX_POLL_WAIT_SECS));
    let explicit = match req.after.as_deref() {
        Some(raw) => Some(parse_cursor(raw)?),
        None => None,
    };
    let deadline = Instant::now() + wait;
    // Subscribe before the first read so a message committed in between still wakes us.
    let mut bell = state.hub.subscribe(me.id);
    loop {
        let after = match explicit {
            Some(c) => c,
            None => state.store.session_cursor(session.session_id).await?,
        };
        bell.borrow_and_update();
        let messages = state.store.poll(me.id, after, limit).await?;
        let next = messages
            .last()
            .and_then(|m| m.cursor.parse::<u64>().ok())
            .unwrap_or(after);
        if !messages.is_empty() {
            if explicit.is_none()
                && !state
                    .store
                    .advance_session_cursor(session.session_id, after, next)
                    .await?
            {
                // Another claimer of this session took these first; read again from theirs.
                continue;
            }
            return Ok(Json(PollResponse {
                ok: true,
                messages,
                next_cursor: next.to_string(),
            }));
        }
        let woke = tokio::select! {
            changed = bell.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
            _ = state.shutdown.cancelled() => false,
        };
        if !woke {
            return Ok(Json(PollResponse {
                ok: true,
                messages,
                next_cursor: next.to_string(),
            }));
        }
    }
}

/// Moves the session's claim cursor forward, for clients that poll with `after`, store what
/// they got, then acknowledge (the daemon does). Never moves it back.
#[utoipa::path(post, path = "/api/v1/webchat/ack", tag = "messages",
    security(("session" = [])),
    request_body = AckRequest,
    responses(
        (status = 200, body = AckResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<AckRequest>,
) -> ApiResult<Json<AckResponse>> {
    let to = parse_cursor(&req.cursor)?;
    let head = state.store.stream_head(session.user.id).await?;
    if to > head {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCursor,
            format!("cursor {to} is past the end of your stream ({head})"),
        ));
    }
    let claim = state
        .store
        .ack_session_cursor(session.session_id, to)
        .await?;
    Ok(Json(AckResponse {
        ok: true,
        claim_cursor: claim.to_string(),
    }))
}
