//! `/api/v1/webchat/callbacks/inbound`: a person's or agent's own callbacks (others' are not
//! found, not forbidden: their ids say nothing).

use axum::Json;
use axum::extract::State;

use super::{dispatch, guard, sign};
use crate::api::callbacks::{
    CallbackCreated, CallbackInfo, CallbackList, CallbackUpdated, CreateCallback, DeliveryInfo,
    DeliveryList,
};
use crate::api::{ErrorBody, ErrorCode, OkResponse, now_millis, rfc3339_from_millis};
use crate::relay::AppState;
use crate::relay::error::{ApiError, ApiResult};
use crate::relay::extract::{Auth, JsonBody, PathParams};
use crate::relay::store::{CallbackChange, CallbackRecord, NewCallback, StoreError};

/// Channels a callback can listen to.
pub const CHANNELS: [&str; 6] = ["pchat", "sms", "wa", "tg", "email", "notify"];
const MAX_KEYWORDS: usize = 50;
const MAX_KEYWORD_CHARS: usize = 100;

fn info(cb: CallbackRecord) -> CallbackInfo {
    CallbackInfo {
        callback_id: cb.public_id,
        url: cb.url,
        channels: cb.channels,
        keywords: cb.keywords,
        enabled: cb.enabled,
        disabled_reason: cb.disabled_reason,
        created_at: rfc3339_from_millis(cb.created_at),
        pending: cb.pending,
        dead: cb.dead,
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::NotFound,
        format!("you have no callback {id} (GET /api/v1/webchat/callbacks/inbound lists yours)"),
    )
}

fn refused(e: guard::UrlRefused) -> ApiError {
    match e {
        guard::UrlRefused::Invalid(m) => ApiError::bad_request(ErrorCode::InvalidUrl, m),
        guard::UrlRefused::NotAllowed(m) => ApiError::bad_request(ErrorCode::UrlNotAllowed, m),
    }
}

/// A name is resolved now too, so one that only leads to private addresses is refused at
/// once (deliveries check again, on the addresses they connect to).
async fn check_target(raw: &str, allow_private: bool) -> ApiResult<url::Url> {
    let url = guard::check_url(raw, allow_private).map_err(refused)?;
    if let (Some(url::Host::Domain(d)), false) = (url.host(), allow_private) {
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<_> = tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::InvalidUrl,
                    format!("url: cannot resolve {d} ({e})"),
                )
            })?
            .collect();
        if addrs.iter().all(|a| guard::forbidden(a.ip())) {
            return Err(refused(guard::UrlRefused::NotAllowed(format!(
                "url: {d} resolves only to this machine or a private network; callbacks go \
                     to public addresses (an operator can allow private ones with \
                     PCHAT_CALLBACKS_ALLOW_PRIVATE=true)"
            ))));
        }
    }
    Ok(url)
}

fn channels(raw: Vec<String>) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in raw {
        let c = c.trim().to_ascii_lowercase();
        if !CHANNELS.contains(&c.as_str()) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("channels: {c:?} is not one of {}", CHANNELS.join(", ")),
            ));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn keywords(raw: Vec<String>) -> ApiResult<Vec<String>> {
    if raw.len() > MAX_KEYWORDS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("keywords: at most {MAX_KEYWORDS}"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for k in raw {
        let k = k.trim().to_lowercase();
        if k.is_empty() || k.chars().count() > MAX_KEYWORD_CHARS {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("keywords: each is 1 to {MAX_KEYWORD_CHARS} characters"),
            ));
        }
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// Subscribes a URL to the caller's new messages (filtered by channel and keyword).
#[utoipa::path(post, path = "/api/v1/webchat/callbacks/inbound", tag = "callbacks",
    security(("session" = [])),
    request_body = CreateCallback,
    responses(
        (status = 200, body = CallbackCreated),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<CreateCallback>,
) -> ApiResult<Json<CallbackCreated>> {
    let cfg = &state.callbacks.config;
    let url = check_target(&req.url, cfg.allow_private).await?;
    let channels = channels(req.channels)?;
    let keywords = keywords(req.keywords)?;
    let secret = sign::new_secret();
    let mut raw = [0u8; 9];
    rand::fill(&mut raw);
    let cb = state
        .store
        .create_callback(NewCallback {
            public_id: format!("cb_{}", hex::encode(raw)),
            user_id: session.user.id,
            url: url.to_string(),
            channels,
            keywords,
            secret: secret.clone(),
            max_per_user: cfg.per_identity,
            now: now_millis(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                ErrorCode::TooManyCallbacks,
                m,
            ),
            other => other.into(),
        })?;
    dispatch::start_follower(&state, cb.clone());
    Ok(Json(CallbackCreated {
        ok: true,
        callback: info(cb),
        secret,
    }))
}

/// The caller's callbacks.
#[utoipa::path(get, path = "/api/v1/webchat/callbacks/inbound", tag = "callbacks",
    security(("session" = [])),
    responses((status = 200, body = CallbackList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<CallbackList>> {
    let all = state.store.callbacks_of(session.user.id).await?;
    Ok(Json(CallbackList {
        ok: true,
        callbacks: all.into_iter().map(info).collect(),
    }))
}

/// Removes one of the caller's callbacks, and what it still had queued.
#[utoipa::path(delete, path = "/api/v1/webchat/callbacks/inbound/{cb_id}", tag = "callbacks",
    security(("session" = [])),
    params(("cb_id" = String, Path)),
    responses(
        (status = 200, body = OkResponse),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<OkResponse>> {
    let Some(cb) = state.store.callback(session.user.id, &id).await? else {
        return Err(not_found(&id));
    };
    dispatch::stop_follower(&state, cb.id);
    if !state.store.delete_callback(session.user.id, &id).await? {
        return Err(not_found(&id));
    }
    Ok(Json(OkResponse::ok()))
}

/// Applies the owner's change and answers with the callback as it now is (the new secret
/// after a rotation, how many were queued again after a redelivery).
async fn apply(
    state: &AppState,
    user_id: i64,
    id: &str,
    change: CallbackChange,
) -> ApiResult<Json<CallbackUpdated>> {
    let secret = change.secret.clone();
    let redelivered = change.requeue_dead_until.is_some();
    let (cb, requeued) = state
        .store
        .change_callback(user_id, id, change)
        .await?
        .ok_or_else(|| not_found(id))?;
    if cb.enabled {
        dispatch::start_follower(state, cb.clone());
        state.callbacks.bell.notify_one();
    }
    Ok(Json(CallbackUpdated {
        ok: true,
        callback: info(cb),
        secret,
        requeued: redelivered.then_some(requeued),
    }))
}

/// Turns a callback the relay turned off back on (events since then go out too).
#[utoipa::path(post, path = "/api/v1/webchat/callbacks/inbound/{cb_id}/enable", tag = "callbacks",
    security(("session" = [])),
    params(("cb_id" = String, Path)),
    responses(
        (status = 200, body = CallbackUpdated),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn enable(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<CallbackUpdated>> {
    let change = CallbackChange {
        enable: true,
        now: now_millis(),
        ..CallbackChange::default()
    };
    apply(&state, session.user.id, &id, change).await
}

/// A new signing secret, shown once; the old one stops signing at once.
#[utoipa::path(post, path = "/api/v1/webchat/callbacks/inbound/{cb_id}/rotate-secret",
    tag = "callbacks", security(("session" = [])),
    params(("cb_id" = String, Path)),
    responses(
        (status = 200, body = CallbackUpdated),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<CallbackUpdated>> {
    let change = CallbackChange {
        secret: Some(sign::new_secret()),
        now: now_millis(),
        ..CallbackChange::default()
    };
    apply(&state, session.user.id, &id, change).await
}

/// Queues the callback's dead deliveries again, each with a fresh retry period.
#[utoipa::path(post, path = "/api/v1/webchat/callbacks/inbound/{cb_id}/redeliver",
    tag = "callbacks", security(("session" = [])),
    params(("cb_id" = String, Path)),
    responses(
        (status = 200, body = CallbackUpdated),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn redeliver(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<CallbackUpdated>> {
    let now = now_millis();
    let change = CallbackChange {
        requeue_dead_until: Some(now + state.callbacks.config.retry_secs as i64 * 1000),
        now,
        ..CallbackChange::default()
    };
    apply(&state, session.user.id, &id, change).await
}

/// The newest deliveries of a callback (at most 100), with how each went.
#[utoipa::path(get, path = "/api/v1/webchat/callbacks/inbound/{cb_id}/deliveries",
    tag = "callbacks", security(("session" = [])),
    params(("cb_id" = String, Path)),
    responses(
        (status = 200, body = DeliveryList),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(session): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<DeliveryList>> {
    let rows = state
        .store
        .deliveries(session.user.id, &id, 100)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(DeliveryList {
        ok: true,
        deliveries: rows
            .into_iter()
            .map(|d| DeliveryInfo {
                webhook_id: d.webhook_id,
                state: d.state,
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error,
                created_at: rfc3339_from_millis(d.created_at),
                delivered_at: d.delivered_at.map(rfc3339_from_millis),
            })
            .collect(),
    }))
}
