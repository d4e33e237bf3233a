//! Sending on a channel (`POST /api/v1/messages` with an API key), a message's delivery status
//! (`GET /api/v1/messages/{message_id}`), and replies from the bridge
//! (`POST /api/v1/bridge/inbound`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::keys::{BridgeKey, Caller};
use crate::api::bridge::{
    BridgeOutbound, Channel, DeliveryStatus, ExternalContact, InboundRequest, InboundResponse,
    MessageStatus,
};
use crate::api::messages::{MAX_CLIENT_ID_CHARS, SendResponse};
use crate::api::{ErrorBody, ErrorCode, MAX_TEXT_BYTES, now_millis, rfc3339_from_millis};
use crate::relay::AppState;
use crate::relay::error::{ApiError, ApiResult};
use crate::relay::extract::{JsonBody, PathParams};
use crate::relay::store::{ApiKeyRecord, ContactRef, NewMessage, Outbound, Target};

/// Longest email subject kept.
const MAX_SUBJECT_CHARS: usize = 150;
/// Longest name a bridge may give a contact.
const MAX_NAME_CHARS: usize = 100;

/// The channel and recipient a send names, from `channel` and `to` (which may itself carry
/// the channel: `wa:+15551230001`); None for a pchat send.
pub fn external_target(channel: Option<&str>, to: &str) -> ApiResult<Option<ExternalContact>> {
    let channel = match channel.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(Channel::parse(c).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("channel {c:?} is not one of pchat, email, sms, wa, tg, notify"),
            )
            .on("channel")
        })?),
    };
    let prefixed = ExternalContact::parse_address(to);
    let contact = match (channel, prefixed) {
        (None | Some(Channel::Pchat), None) => return Ok(None),
        (Some(Channel::Pchat), Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("to {to:?} is an external address, but channel is pchat"),
            )
            .on("channel"));
        }
        (None, Some(parsed)) => parsed,
        (Some(ch), Some(parsed)) => match parsed {
            Ok(c) if c.channel != ch => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    format!(
                        "to {to:?} is on {}, but channel is {}",
                        c.channel.as_str(),
                        ch.as_str()
                    ),
                )
                .on("channel"));
            }
            other => other,
        },
        (Some(ch), None) => ExternalContact::new(ch, to),
    };
    let ch = channel.unwrap_or(Channel::Sms);
    contact
        .map(Some)
        .map_err(|why| recipient_error(ch, to, why, "to"))
}

fn recipient_error(channel: Channel, raw: &str, why: String, field: &'static str) -> ApiError {
    let code = match ExternalContact::parse_address(raw)
        .and_then(Result::ok)
        .map_or(channel, |c| c.channel)
    {
        Channel::Email => ErrorCode::InvalidEmail,
        _ => ErrorCode::InvalidPhone,
    };
    ApiError::bad_request(code, format!("{field}: {why}")).on(field)
}

/// The phone id a keyed request acts for: the one it names (which the key must hold), else
/// the key's only one. Email needs none.
fn phone_id_for(key: &ApiKeyRecord, asked: Option<&str>, channel: Channel) -> ApiResult<String> {
    match asked.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) if key.phone_ids.iter().any(|k| k == p) => Ok(p.to_string()),
        Some(p) if channel == Channel::Email && key.phone_ids.is_empty() => Ok(p.to_string()),
        Some(p) => Err(ApiError::forbidden(
            ErrorCode::PhoneIdNotAllowed,
            format!(
                "this API key is not for phone id {p:?}; it is for {}",
                list_or_none(&key.phone_ids)
            ),
        )
        .on("phone_id")),
        None => match key.phone_ids.as_slice() {
            [only] => Ok(only.clone()),
            [] if channel == Channel::Email => Ok(String::new()),
            [] => Err(ApiError::forbidden(
                ErrorCode::PhoneIdNotAllowed,
                "this API key has no phone ids, so it sends email and pchat only",
            )
            .on("phone_id")),
            _ => Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "phone_id: this API key has several ({}); name one",
                    key.phone_ids.join(", ")
                ),
            )
            .on("phone_id")),
        },
    }
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "no phone id".into()
    } else {
        ids.join(", ")
    }
}

/// One line, no control characters, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .chars()
        .take(max)
        .collect()
}

/// A send on an external channel, its checks done by the caller (text, client id).
pub struct ExternalSend {
    pub contact: ExternalContact,
    pub phone_id: Option<String>,
    pub subject: Option<String>,
    pub has_attachments: bool,
    pub message: NewMessage,
}

/// Stores the message in the sender's conversation with the contact and queues it to go out.
pub async fn send_external(
    state: &AppState,
    caller: &Caller,
    send: ExternalSend,
) -> ApiResult<SendResponse> {
    let channel = send.contact.channel;
    let Some(key) = &caller.key else {
        return Err(ApiError::unauthorized(
            ErrorCode::ApiKeyRequired,
            format!(
                "sending on {} needs a PhoneRelay API key: Authorization: Bearer prk_… (the \
                 relay's operator makes one with gts-webchat relay keys create)",
                channel.as_str()
            ),
        ));
    };
    let phone_id = phone_id_for(key, send.phone_id.as_deref(), channel)?;
    if send.has_attachments {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidAttachment,
            format!(
                "attachments cannot go out on {}; send a link in the text",
                channel.as_str()
            ),
        )
        .on("attachments"));
    }
    if send.message.text.trim().is_empty() {
        return Err(
            ApiError::bad_request(ErrorCode::EmptyMessage, "the message has no text").on("text"),
        );
    }
    if channel.via_bridge() && state.bridge.config.url.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BridgeUnavailable,
            format!(
                "this relay has no PhoneRelay bridge, so it cannot send on {}; its operator \
                 sets PHONE_RELAY_BRIDGE_URL and PHONE_RELAY_BRIDGE_SECRET",
                channel.as_str()
            ),
        ));
    }
    if channel == Channel::Email && state.mailer.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::EmailUnavailable,
            "this relay has no SMTP settings, so it cannot send email; its operator sets \
             SMTP_HOST (and SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_FROM)",
        ));
    }
    let msg = send.message;
    let (subject, payload) = if channel == Channel::Email {
        let subject = send
            .subject
            .as_deref()
            .map(|s| one_line(s, MAX_SUBJECT_CHARS))
            .filter(|s| !s.is_empty())
            .or_else(|| {
                msg.text
                    .lines()
                    .map(|l| one_line(l, MAX_SUBJECT_CHARS))
                    .find(|l| !l.is_empty())
            })
            .unwrap_or_default();
        (Some(subject), msg.text.clone())
    } else {
        let body = BridgeOutbound {
            event_type: "message.outbound".into(),
            message_id: msg.public_id.clone(),
            phone_id: phone_id.clone(),
            channel: channel.as_str().into(),
            to: send.contact.recipient.clone(),
            from: caller.user.chat_address.clone(),
            from_name: caller.user.display_name.clone(),
            text: msg.text.clone(),
            created_at: rfc3339_from_millis(msg.created_at),
        };
        let json = serde_json::to_string(&body).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidRequest, format!("encoding: {e}"))
        })?;
        (None, json)
    };
    let give_up_at = msg.created_at + (state.callbacks.config.retry_secs as i64) * 1000;
    let sent = state
        .store
        .send_outbound(
            msg,
            Outbound {
                key_id: key.id,
                contact: ContactRef {
                    address: send.contact.address(),
                    name: None,
                },
                channel: channel.as_str().into(),
                phone_id,
                recipient: send.contact.recipient.clone(),
                subject,
                payload,
                give_up_at,
            },
        )
        .await?;
    if sent.enrich {
        state.voice.wake();
    }
    if !sent.duplicate {
        metrics::counter!("gtsw_messages_stored_total", "channel" => channel.as_str()).increment(1);
    }
    state.bridge.wake();
    Ok(SendResponse {
        ok: true,
        message_id: sent.public_id,
        created_at: rfc3339_from_millis(sent.created_at),
        duplicate: sent.duplicate,
        status: (!sent.duplicate).then_some(DeliveryStatus::Queued),
    })
}

/// How far a message the caller sent has got: for email and bridge channels queued, sent or
/// failed (with the reason); a pchat message is delivered once stored.
#[utoipa::path(get, path = "/api/v1/messages/{message_id}", tag = "messages",
    security(("session" = []), ("api_key" = [])),
    params(("message_id" = String, Path, description = "A message id you sent")),
    responses(
        (status = 200, body = MessageStatus),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(message_id): PathParams<String>,
) -> ApiResult<Json<MessageStatus>> {
    let not_found = || {
        ApiError::not_found(
            ErrorCode::NotFound,
            format!("you sent no message {message_id:?}"),
        )
    };
    if message_id.len() > 64 {
        return Err(not_found());
    }
    let row = state
        .store
        .message_status(caller.user.id, &message_id)
        .await?
        .ok_or_else(not_found)?;
    let created_at = rfc3339_from_millis(row.created_at);
    Ok(Json(match row.outbound {
        Some(out) => MessageStatus {
            ok: true,
            message_id,
            channel: out.channel,
            to: out.recipient,
            status: DeliveryStatus::parse(&out.state).unwrap_or(DeliveryStatus::Queued),
            error: out.last_error,
            attempts: out.attempts,
            created_at,
            sent_at: out.sent_at.map(rfc3339_from_millis),
        },
        None => MessageStatus {
            ok: true,
            message_id,
            channel: "pchat".into(),
            to: row.to_target,
            status: DeliveryStatus::Delivered,
            error: None,
            attempts: 0,
            created_at,
            sent_at: None,
        },
    }))
}

/// A message from outside (an SMS, WhatsApp or Telegram reply, an email) for the key's owner:
/// it lands in their conversation with the sender's address (`wa:+15551230001`).
#[utoipa::path(post, path = "/api/v1/bridge/inbound", tag = "bridge",
    security(("api_key" = [])),
    request_body = InboundRequest,
    responses(
        (status = 200, body = InboundResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn inbound(
    State(state): State<AppState>,
    BridgeKey(key): BridgeKey,
    JsonBody(req): JsonBody<InboundRequest>,
) -> ApiResult<Json<InboundResponse>> {
    let channel = Channel::parse(&req.channel)
        .filter(|c| *c != Channel::Pchat)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "channel {:?} is not one of sms, wa, tg, notify, email",
                    req.channel
                ),
            )
            .on("channel")
        })?;
    phone_id_for(&key, Some(&req.phone_id), channel)?;
    let contact = ExternalContact::new(channel, &req.from)
        .map_err(|why| recipient_error(channel, &req.from, why, "from"))?;
    if req.text.trim().is_empty() {
        return Err(
            ApiError::bad_request(ErrorCode::EmptyMessage, "the message has no text").on("text"),
        );
    }
    if req.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::too_large(format!(
            "text is {} bytes; the limit is {} KiB",
            req.text.len(),
            MAX_TEXT_BYTES / 1024
        ))
        .on("text"));
    }
    let id = req.id.as_deref().map(str::trim).filter(|i| !i.is_empty());
    if id
        .is_some_and(|i| i.chars().count() > MAX_CLIENT_ID_CHARS || i.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("id must be 1-{MAX_CLIENT_ID_CHARS} characters without control characters"),
        )
        .on("id"));
    }
    let name = req
        .name
        .as_deref()
        .map(|n| one_line(n, MAX_NAME_CHARS))
        .filter(|n| !n.is_empty());
    let sent = state
        .store
        .receive_inbound(
            NewMessage {
                public_id: crate::relay::messages::new_message_id(),
                sender_id: 0,
                target: Target::Address(key.owner_address.clone()),
                text: req.text,
                reply_to: None,
                attachments: Vec::new(),
                // Per key: two bridges may number their messages alike.
                client_id: id.map(|i| format!("{}:{i}", key.public_id)),
                language: None,
                created_at: now_millis(),
            },
            ContactRef {
                address: contact.address(),
                name,
            },
        )
        .await?;
    if sent.enrich {
        state.voice.wake();
    }
    if !sent.duplicate {
        metrics::counter!("gtsw_messages_stored_total", "channel" => channel.as_str()).increment(1);
    }
    Ok(Json(InboundResponse {
        ok: true,
        message_id: sent.public_id,
        conversation: contact.address(),
        duplicate: sent.duplicate,
    }))
}
