//! Login by emailed code, logout, and `me`.

use axum::Json;
use axum::extract::State;

use super::client_addr::ClientAddr;
use axum::http::StatusCode;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody, token_hash};
use super::login_policy::{
    self, CODE_MAX_ATTEMPTS, FAILS_BEFORE_LONG_CODES, FAILS_PER_CLIENT, LONG_WINDOW_MS,
    SHORT_WINDOW_MS, client_key,
};
use super::origin::Caller;
use super::store::{CodeAttempt, CodeRejection, LoginOutcome, NewChallenge, Registration};
use crate::api::address::{normalize_address, normalize_email};
use crate::api::auth::{
    MeResponse, ProfileUpdate, RequestCodeRequest, RequestCodeResponse, VerifyCodeRequest,
    VerifyCodeResponse,
};
use crate::api::{ErrorBody, ErrorCode, OkResponse, TOKEN_PREFIX, now_millis, rfc3339_from_millis};

/// Longest display name.
pub const MAX_NAME_CHARS: usize = 80;

/// Longest login id or code a client may send.
const MAX_CODE_CHARS: usize = 64;

pub(crate) fn clean_name(name: Option<&str>) -> ApiResult<Option<String>> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("display_name is over {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "display_name may not hold control characters",
        ));
    }
    Ok(Some(name.to_string()))
}

/// The caller's address key, now, and the login activity the limits look at.
async fn pressure(
    state: &AppState,
    email: &str,
    peer: std::net::IpAddr,
) -> ApiResult<(String, i64, super::store::AuthPressure)> {
    let client = client_key(peer);
    let now = now_millis();
    let pressure = state
        .store
        .auth_pressure(email, &client, now - SHORT_WINDOW_MS, now - LONG_WINDOW_MS)
        .await?;
    Ok((client, now, pressure))
}

fn bad_email(e: String) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidEmail, e)
}

/// Sends a 6-digit login code by email (and returns it when the relay exposes codes).
#[utoipa::path(post, path = "/api/v1/pchat/auth/request-code", tag = "auth",
    request_body = RequestCodeRequest,
    responses(
        (status = 200, body = RequestCodeResponse),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn request_code(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    caller: Caller,
    JsonBody(req): JsonBody<RequestCodeRequest>,
) -> ApiResult<Json<RequestCodeResponse>> {
    let email = normalize_email(&req.email).map_err(bad_email)?;
    let display_name = clean_name(req.display_name.as_deref())?.unwrap_or_default();
    let config = &state.config;
    if !config.can_deliver_codes() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::EmailNotConfigured,
            "this relay cannot deliver login codes: its operator must set SMTP_HOST (with SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_FROM) or PCHAT_DEV_EXPOSE_CODES=true",
        ));
    }
    let (client, now, pressure) = pressure(&state, &email, peer).await?;
    let limited = (config.code_rate_per_ip > 0
        && pressure.codes_from_client >= config.code_rate_per_ip)
        || (config.code_rate_per_email > 0
            && pressure.codes_for_email_from_client >= config.code_rate_per_email);
    if limited {
        metrics::counter!("gtsw_login_codes_total", "result" => "rate_limited").increment(1);
    }
    if config.code_rate_per_ip > 0 && pressure.codes_from_client >= config.code_rate_per_ip {
        return Err(ApiError::rate_limited(
            "too many login codes requested from your network address; wait 10 minutes",
        ));
    }
    if config.code_rate_per_email > 0
        && pressure.codes_for_email_from_client >= config.code_rate_per_email
    {
        return Err(ApiError::rate_limited(
            "too many login codes requested for this email from your network address; wait 10 minutes and use the newest code",
        ));
    }
    if !config.may_register(&email) && state.store.user_by_email(&email).await?.is_none() {
        return Err(ApiError::forbidden(
            ErrorCode::RegistrationClosed,
            "this relay is private and does not take new registrations from that email; ask its operator",
        ));
    }

    let expose = config.expose_codes() && caller.may_see_dev_codes();
    if config.expose_codes() && !expose && state.mailer.is_none() {
        return Err(ApiError::forbidden(
            ErrorCode::OriginNotAllowed,
            "this development relay shows login codes only to its own web app and to programs; open the app the relay serves, or give the relay SMTP settings",
        ));
    }
    let long = pressure.fails_for_email >= FAILS_BEFORE_LONG_CODES;
    if long {
        tracing::warn!("many wrong login codes for one email this week; issuing long codes");
    }
    let code = login_policy::new_code(long);
    let (login_id, login_hash) = login_policy::new_login_id();
    state
        .store
        .put_challenge(NewChallenge {
            login_hash,
            code_hash: login_policy::code_hash(&email, &code),
            email: email.clone(),
            client,
            expires_at: now + (config.code_ttl_secs as i64) * 1000,
            now,
        })
        .await?;

    let mut emailed = false;
    if let Some(mailer) = &state.mailer {
        if let Err(e) = mailer.send_code(&email, &display_name, &code).await {
            tracing::warn!(error = %e, "could not mail a login code");
            if !expose {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::MailFailed,
                    "the relay could not send the login code email; try again later or tell the relay's operator",
                ));
            }
        } else {
            emailed = true;
        }
    }
    metrics::counter!("gtsw_login_codes_total", "result" => if emailed { "mailed" } else { "shown" })
        .increment(1);
    Ok(Json(RequestCodeResponse {
        ok: true,
        emailed,
        dev_code: expose.then(|| code.clone()),
        login_id,
        code_length: login_policy::normalize_code(&code).len() as u32,
        expires_in: config.code_ttl_secs,
    }))
}

/// Checks a login code and opens a session, creating the identity on first login.
#[utoipa::path(post, path = "/api/v1/pchat/auth/verify-code", tag = "auth",
    request_body = VerifyCodeRequest,
    responses(
        (status = 200, body = VerifyCodeResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn verify_code(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    JsonBody(req): JsonBody<VerifyCodeRequest>,
) -> ApiResult<Json<VerifyCodeResponse>> {
    let email = normalize_email(&req.email).map_err(bad_email)?;
    if req.code.len() > MAX_CODE_CHARS
        || req
            .login_id
            .as_ref()
            .is_some_and(|l| l.len() > MAX_CODE_CHARS)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "code or login_id is too long to be one this relay issued",
        ));
    }
    let chat_address = match req.chat_address.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => Some(
            normalize_address(a)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidAddress, e))?,
        ),
        _ => None,
    };
    let display_name = clean_name(req.display_name.as_deref())?;
    let (client, now, pressure) = pressure(&state, &email, peer).await?;
    if pressure.fails_from_client >= FAILS_PER_CLIENT {
        return Err(ApiError::rate_limited(
            "too many wrong login codes from your network address; wait 10 minutes",
        ));
    }
    let attempt = CodeAttempt {
        code_hash: login_policy::code_hash(&email, &req.code),
        login_hash: req
            .login_id
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(token_hash),
        email: email.clone(),
        client,
        max_attempts: CODE_MAX_ATTEMPTS,
        now,
    };
    let reg = Registration {
        allow_new: state.config.may_register(&email),
        email,
        display_name,
        chat_address,
        public_visible: req.public_visible,
        kind: req.kind,
    };

    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
    let expires_at = now + state.config.session_ttl_secs * 1000;
    let outcome = state
        .store
        .verify_and_login(attempt, reg, &token_hash(&token), expires_at)
        .await?;
    match outcome {
        LoginOutcome::LoggedIn { user, .. } => Ok(Json(VerifyCodeResponse {
            ok: true,
            session_token: token,
            chat_address: user.chat_address,
            display_name: user.display_name,
            kind: user.kind,
            public_visible: user.public_visible,
            expires_at: rfc3339_from_millis(expires_at),
        })),
        LoginOutcome::Rejected(CodeRejection::Expired) => Err(ApiError::unauthorized(
            ErrorCode::CodeExpired,
            "no valid login code for this email from this client (it expired, was used, or was requested elsewhere); request a new one",
        )),
        LoginOutcome::Rejected(CodeRejection::Wrong { remaining }) => Err(ApiError::unauthorized(
            ErrorCode::CodeInvalid,
            format!("wrong login code; {remaining} tries left"),
        )),
        LoginOutcome::Rejected(CodeRejection::Locked) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::CodeLocked,
            "too many wrong tries; request a new code",
        )),
        LoginOutcome::AddressTaken => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AddressTaken,
            "that chat address belongs to someone else; choose another",
        )),
        LoginOutcome::RegistrationClosed => Err(ApiError::forbidden(
            ErrorCode::RegistrationClosed,
            "this relay is private and does not take new registrations from that email",
        )),
    }
}

/// Ends the calling session; its token stops working at once.
#[utoipa::path(post, path = "/api/v1/pchat/auth/logout", tag = "auth",
    security(("session" = [])),
    responses((status = 200, body = OkResponse), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<OkResponse>> {
    state.end_session(&session).await?;
    Ok(Json(OkResponse::ok()))
}

/// The identity behind the session token.
#[utoipa::path(get, path = "/api/v1/webchat/me", tag = "auth",
    security(("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, Auth(session): Auth) -> ApiResult<Json<MeResponse>> {
    let claim_cursor = state.store.session_cursor(session.session_id).await?;
    let stream_head = state.store.stream_head(session.user.id).await?;
    Ok(Json(MeResponse {
        ok: true,
        email: session.user.email,
        chat_address: session.user.chat_address,
        display_name: session.user.display_name,
        kind: session.user.kind,
        public_visible: session.user.public_visible,
        expires_at: rfc3339_from_millis(session.expires_at),
        claim_cursor: claim_cursor.to_string(),
        stream_head: stream_head.to_string(),
    }))
}

/// Changes the caller's display name and whether the directory lists them.
#[utoipa::path(put, path = "/api/v1/webchat/profile", tag = "auth",
    security(("session" = [])),
    request_body = ProfileUpdate,
    responses(
        (status = 200, body = OkResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn profile(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<ProfileUpdate>,
) -> ApiResult<Json<OkResponse>> {
    let name = clean_name(req.display_name.as_deref())?;
    state
        .store
        .set_profile(session.user.id, name, req.public_visible)
        .await?;
    state.forget_sessions_of(session.user.id);
    Ok(Json(OkResponse::ok()))
}
