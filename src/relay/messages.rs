//! Sending messages and polling for them (plain, claim and long-poll).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use tokio::time::Instant;

use super::AppState;
use super::bridge::api::{ExternalSend, external_target, send_external};
use super::bridge::keys::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody};
use super::presence::check_own_address;
use super::store::{NewMessage, StoreError, Target};
use crate::api::OkResponse;
use crate::api::address::{group_target, normalize_address};
use crate::api::messages::{
    AckRequest, AckResponse, AttachmentRef, ConversationsResponse, EditRequest,
    MAX_CLIENT_ID_CHARS, MessageRef, PollRequest, PollResponse, ReportRequest, SendRequest,
    SendResponse,
};
use crate::api::{
    ErrorBody, ErrorCode, MAX_POLL_WAIT_SECS, MAX_TEXT_BYTES, now_millis, rfc3339_from_millis,
};

/// Longest id a client may quote in `reply_to`.
const MAX_ID_CHARS: usize = 64;
/// Most attachments on one message.
const MAX_ATTACHMENTS: usize = 20;

/// Attachments named in a JSON value: an upload answer (`{"attachment": {…}}`), an attachment
/// (`{"file_id": …}`), `{"attachments": […]}`, or an array of those.
fn attachments_in(v: &serde_json::Value) -> Option<Vec<AttachmentRef>> {
    use serde_json::Value;
    let one = |o: &serde_json::Map<String, Value>| -> Option<AttachmentRef> {
        let file_id = o.get("file_id")?.as_str()?.to_string();
        Some(AttachmentRef {
            file_id,
            kind: o.get("kind").and_then(Value::as_str).map(str::to_string),
        })
    };
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(a)) = o.get("attachment") {
                return one(a).map(|a| vec![a]);
            }
            if let Some(Value::Array(list)) = o.get("attachments") {
                let all: Vec<AttachmentRef> =
                    list.iter().filter_map(attachments_in).flatten().collect();
                return (!all.is_empty()).then_some(all);
            }
            one(o).map(|a| vec![a])
        }
        Value::Array(list) => {
            let all: Vec<AttachmentRef> =
                list.iter().filter_map(attachments_in).flatten().collect();
            (!all.is_empty()).then_some(all)
        }
        _ => None,
    }
}

/// The seed's two-step flow puts the upload's metadata block in `text`. Finds such blocks
/// (the whole text, or lines of it) and returns the remaining caption and the attachments.
pub(crate) fn split_attachment_block(text: &str) -> Option<(String, Vec<AttachmentRef>)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim())
        && let Some(found) = attachments_in(&v)
    {
        let caption = v
            .get("caption")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string();
        return Some((caption, found));
    }
    let mut found = Vec::new();
    let mut caption = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        match (t.starts_with('{') || t.starts_with('['))
            .then(|| serde_json::from_str::<serde_json::Value>(t).ok())
            .flatten()
            .and_then(|v| attachments_in(&v))
        {
            Some(list) => found.extend(list),
            None => caption.push(line),
        }
    }
    (!found.is_empty()).then(|| (caption.join("\n").trim().to_string(), found))
}

/// `msg_` + 12 hex digits of milliseconds + 12 random: unguessable, and in time order, so
/// the id index grows at its end instead of being written all over (a B-tree's worst case).
pub(crate) fn new_message_id() -> String {
    let mut raw = [0u8; 6];
    rand::fill(&mut raw);
    format!("msg_{:012x}{}", now_millis().max(0), hex::encode(raw))
}

/// Sends a message to a chat address as the session's identity.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages",
    security(("session" = []), ("api_key" = [])),
    request_body = SendRequest,
    responses(
        (status = 200, body = SendResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<SendRequest>,
) -> ApiResult<Json<SendResponse>> {
    let me = &caller.user;
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
        )
        .on("source"));
    }
    let to = req.to.trim();
    let external = external_target(req.channel.as_deref(), to)?;
    let target = match (&external, group_target(to)) {
        (Some(c), _) => Target::Address(c.address()),
        (None, Some(group)) => Target::Group(group.to_string()),
        (None, None) => Target::Address(normalize_address(to).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidAddress, format!("to: {e}")).on("to")
        })?),
    };
    let mut text = req.text.unwrap_or_default();
    let mut attachments = req.attachments.unwrap_or_default();
    if attachments.is_empty()
        && let Some((caption, found)) = split_attachment_block(&text)
    {
        text = caption;
        attachments = found;
    }
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("at most {MAX_ATTACHMENTS} attachments per message"),
        )
        .on("attachments"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::too_large(format!(
            "text is {} bytes; the limit is {} KiB",
            text.len(),
            MAX_TEXT_BYTES / 1024
        ))
        .on("text"));
    }
    if text.trim().is_empty() && attachments.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyMessage,
            "the message has no text and no attachments",
        )
        .on("text"));
    }
    let reply_to = req
        .reply_to
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reply_to.as_ref().is_some_and(|r| r.len() > MAX_ID_CHARS) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "reply_to is not a message id",
        )
        .on("reply_to"));
    }
    let client_id = req
        .client_message_id
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if client_id
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CLIENT_ID_CHARS || c.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "client_message_id must be 1-{MAX_CLIENT_ID_CHARS} characters without control characters"
            ),
        )
        .on("client_message_id"));
    }
    let message = NewMessage {
        public_id: new_message_id(),
        sender_id: me.id,
        target,
        text,
        reply_to,
        attachments,
        client_id,
        // Detected by the voice worker, off the send path, when a job needs it.
        language: None,
        created_at: now_millis(),
    };
    if let Some(contact) = external {
        let send = ExternalSend {
            contact,
            phone_id: req.phone_id,
            subject: req.subject,
            has_attachments: !message.attachments.is_empty(),
            message,
        };
        return send_external(&state, &caller, send).await.map(Json);
    }
    let sent = state.store.send(message).await?;
    if !sent.duplicate {
        metrics::counter!("gtsw_messages_stored_total", "channel" => "pchat").increment(1);
    }
    if sent.enrich {
        state.voice.wake();
    }
    Ok(Json(SendResponse {
        ok: true,
        message_id: sent.public_id,
        created_at: rfc3339_from_millis(sent.created_at),
        duplicate: sent.duplicate,
        status: None,
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
    check_own_address(req.chat_address.as_deref(), &session.user.chat_address)?;
    // Only ids cross the wait: an idle long-poll should hold as little as possible.
    let (user_id, session_id) = (session.user.id, session.session_id);
    drop(session);
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
    drop(req);
    let deadline = Instant::now() + wait;
    // Subscribe before the first read so a message committed in between still wakes us.
    let mut bell = state.hub.subscribe(user_id);
    let mut woken = false;
    loop {
        let after = match explicit {
            Some(c) => c,
            None => state.store.session_cursor(session_id).await?,
        };
        let rung = bell.borrow_and_update().clone();
        // Fast path: just woken with exactly the next event in hand (a caught-up reader with
        // an explicit cursor), answer with it instead of reading it back. Anything else
        // (first read, a gap, claims) goes to the database.
        if woken
            && explicit.is_some()
            && rung.seq == after + 1
            && let Some(event) = rung.event
        {
            let mut m = (*event).clone();
            m.cursor = rung.seq.to_string();
            super::telemetry::woke(&m);
            return Ok(Json(PollResponse {
                ok: true,
                messages: vec![m],
                next_cursor: rung.seq.to_string(),
            }));
        }
        // The bell has heard of every commit to this stream since it was made (the writer rings
        // in commit order): when it knows `after` is the head, there is nothing to read yet.
        // Seq 0 means it has heard nothing, so the store decides. This spares a read per
        // member when a caught-up reader polls again (1,000 of them after a stream post).
        let caught_up = rung.seq != 0 && rung.seq <= after;
        let messages = if caught_up {
            Vec::new()
        } else {
            state.store.poll(user_id, after, limit).await?
        };
        let next = messages
            .last()
            .and_then(|m| m.cursor.parse::<u64>().ok())
            .unwrap_or(after);
        if !messages.is_empty() {
            if explicit.is_none()
                && !state
                    .store
                    .advance_session_cursor(session_id, after, next)
                    .await?
            {
                // Another claimer of this session took these first; read again from theirs.
                continue;
            }
            if woken {
                super::telemetry::woke(&messages[0]);
            }
            return Ok(Json(PollResponse {
                ok: true,
                messages,
                next_cursor: next.to_string(),
            }));
        }
        let waiting = super::telemetry::Waiting::start();
        let woke = tokio::select! {
            changed = bell.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
            _ = state.shutdown.cancelled() => false,
        };
        drop(waiting);
        if !woke {
            return Ok(Json(PollResponse {
                ok: true,
                messages,
                next_cursor: next.to_string(),
            }));
        }
        woken = true;
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

fn message_id_of(raw: &str) -> ApiResult<&str> {
    let id = raw.trim();
    if id.is_empty() || id.len() > MAX_ID_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "message_id is not a message id",
        ));
    }
    Ok(id)
}

/// The author changes a message's text; receivers get an "edit" event.
#[utoipa::path(post, path = "/api/v1/webchat/edit", tag = "messages",
    security(("session" = [])),
    request_body = EditRequest,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn edit(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<EditRequest>,
) -> ApiResult<Json<OkResponse>> {
    let id = message_id_of(&req.message_id)?;
    if req.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::too_large(format!(
            "text is over {} KiB",
            MAX_TEXT_BYTES / 1024
        )));
    }
    if req.text.trim().is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyMessage,
            "an edit needs text; to remove a message, delete it",
        ));
    }
    // What went out by SMS or email cannot be changed there, so it is not changed here.
    if let Some(out) = state
        .store
        .message_status(session.user.id, id)
        .await?
        .and_then(|s| s.outbound)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "this message went out on {}, where it cannot be edited; send a correction",
                out.channel
            ),
        ));
    }
    state
        .store
        .edit(session.user.id, id, req.text, now_millis())
        .await?;
    Ok(Json(OkResponse::ok()))
}

/// The author (or an admin of its group) deletes a message; receivers get a "delete" event.
#[utoipa::path(post, path = "/api/v1/webchat/delete", tag = "messages",
    security(("session" = [])),
    request_body = MessageRef,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<MessageRef>,
) -> ApiResult<Json<OkResponse>> {
    let id = message_id_of(&req.message_id)?;
    let orphaned = state
        .store
        .delete(session.user.id, id, now_millis())
        .await?;
    // The records are gone (downloads answer 404 from now on); the bytes follow.
    super::files::remove_stored(&state, orphaned).await;
    Ok(Json(OkResponse::ok()))
}

/// Marks a received message read; its author gets one "read" event per reader.
#[utoipa::path(post, path = "/api/v1/webchat/read", tag = "messages",
    security(("session" = [])),
    request_body = MessageRef,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn read(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<MessageRef>,
) -> ApiResult<Json<OkResponse>> {
    let id = message_id_of(&req.message_id)?;
    state
        .store
        .mark_read(session.user.id, id, now_millis())
        .await?;
    Ok(Json(OkResponse::ok()))
}

/// Reports a message or an identity to the relay's operator.
#[utoipa::path(post, path = "/api/v1/webchat/report", tag = "messages",
    security(("session" = [])),
    request_body = ReportRequest,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn report(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<ReportRequest>,
) -> ApiResult<Json<OkResponse>> {
    let message_id = req
        .message_id
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let address = req
        .chat_address
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty());
    if message_id.is_none() && address.is_none() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "say what you report: message_id or chat_address",
        ));
    }
    if message_id.as_ref().is_some_and(|m| m.len() > MAX_ID_CHARS)
        || address.as_ref().is_some_and(|a| a.len() > 80)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "message_id or chat_address is too long",
        ));
    }
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "give a reason of 1-2000 characters",
        ));
    }
    state
        .store
        .report(session.user.id, message_id, address, reason, now_millis())
        .await?;
    tracing::info!(reporter = %session.user.chat_address, "abuse report filed");
    Ok(Json(OkResponse::ok()))
}

/// Query of `GET /api/v1/webchat/history`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct HistoryQuery {
    /// A chat address (direct messages both ways), an external contact (`wa:+1555…`) or
    /// `group:grp_…`.
    pub with: String,
    /// Only messages before this history position (the `cursor` of an earlier answer).
    pub before: Option<i64>,
    /// At most this many (1-200, default 50).
    pub limit: Option<u32>,
}

/// A conversation's messages, oldest first; each `cursor` is its history position.
#[utoipa::path(get, path = "/api/v1/webchat/history", tag = "messages",
    security(("session" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, body = PollResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    Auth(session): Auth,
    super::extract::Query(q): super::extract::Query<HistoryQuery>,
) -> ApiResult<Json<PollResponse>> {
    use super::store::Conversation;
    let external = crate::api::bridge::ExternalContact::parse_address(&q.with);
    let with = match (external, group_target(q.with.trim())) {
        (Some(c), _) => Conversation::With(
            c.map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidAddress, format!("with: {e}")).on("with")
            })?
            .address(),
        ),
        (None, Some(g)) => Conversation::Group(g.to_string()),
        (None, None) => Conversation::With(normalize_address(&q.with).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidAddress, format!("with: {e}")).on("with")
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let external = matches!(&with, Conversation::With(a) if a.contains(':'));
    let rows = match state
        .store
        .history(session.user.id, with, q.before, limit)
        .await
    {
        // A phone number or email address no one has written to yet: nothing so far.
        Err(StoreError::UnknownRecipient(_)) if external => Vec::new(),
        other => other?,
    };
    let next = rows
        .first()
        .map(|(id, _)| id.to_string())
        .unwrap_or_default();
    Ok(Json(PollResponse {
        ok: true,
        messages: rows.into_iter().map(|(_, m)| m).collect(),
        next_cursor: next,
    }))
}

/// The caller's conversations (people, agents, groups), newest first, with unread counts.
#[utoipa::path(get, path = "/api/v1/webchat/conversations", tag = "messages",
    security(("session" = [])),
    responses((status = 200, body = ConversationsResponse), (status = 401, body = ErrorBody)))]
pub async fn conversations(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<ConversationsResponse>> {
    let conversations = state.store.conversations(session.user.id).await?;
    Ok(Json(ConversationsResponse {
        ok: true,
        conversations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text: never a panic; what is found names only ids that were in the text.
        #[test]
        fn attachment_blocks_never_panic(text in any::<String>()) {
            if let Some((_, found)) = split_attachment_block(&text) {
                prop_assert!(!found.is_empty());
                for a in found {
                    prop_assert!(text.contains(&a.file_id));
                }
            }
        }

        /// A pasted upload answer is always found, whatever the caption around it.
        #[test]
        fn pasted_blocks_are_found(id in "file_[0-9a-f]{32}", caption in r"[^\n{\[]{0,40}") {
            let block = serde_json::json!({"ok": true, "file_id": id, "attachment": {"file_id": id, "kind": "image"}});
            let text = format!("{caption}\n{block}");
            let (cap, found) = split_attachment_block(&text).expect("found");
            prop_assert_eq!(&found[0].file_id, &id);
            prop_assert_eq!(cap, caption.trim());
        }
    }

    #[test]
    fn attachment_blocks_in_text() {
        let upload = r#"{"ok":true,"file_id":"file_1","attachment":{"file_id":"file_1","name":"a.mp4","kind":"video"}}"#;
        let (caption, found) = split_attachment_block(upload).unwrap();
        assert_eq!(caption, "");
        assert_eq!(found[0].file_id, "file_1");
        assert_eq!(found[0].kind.as_deref(), Some("video"));
        let mixed = format!("short video\n{}", r#"{"file_id":"file_2","kind":"file"}"#);
        let (caption, found) = split_attachment_block(&mixed).unwrap();
        assert_eq!(caption, "short video");
        assert_eq!(found[0].file_id, "file_2");
        assert!(split_attachment_block("just {text}").is_none());
        assert!(split_attachment_block(r#"{"not":"an attachment"}"#).is_none());
        let list = r#"[{"file_id":"a"},{"attachment":{"file_id":"b"}}]"#;
        assert_eq!(split_attachment_block(list).unwrap().1.len(), 2);
    }
}
