//! PhoneRelay API keys: `prk_` + 32 random bytes, shown once; the relay keeps a SHA-256.
//! A request carrying one (`Authorization: Bearer prk_…`) acts as the key's owner.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::api::{ErrorCode, SESSION_HEADER, TOKEN_PREFIX};
use crate::relay::AppState;
use crate::relay::error::ApiError;
use crate::relay::extract::token_hash;
use crate::relay::store::{ApiKeyRecord, SessionInfo, User};

pub const KEY_PREFIX: &str = "prk_";

/// A fresh key and the id it is listed under.
pub fn new_key() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let mut id = [0u8; 6];
    rand::fill(&mut id);
    (
        format!("{KEY_PREFIX}{}", hex::encode(raw)),
        format!("key_{}", hex::encode(id)),
    )
}

/// Who is calling: a session, an API key, or both (then of the same identity).
pub struct Caller {
    pub user: User,
    pub session: Option<SessionInfo>,
    pub key: Option<ApiKeyRecord>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The key a request carries, checked; None when it carries none.
pub async fn key_of(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<ApiKeyRecord>, ApiError> {
    let Some(key) = bearer(headers).filter(|b| b.starts_with(KEY_PREFIX)) else {
        return Ok(None);
    };
    match state.store.api_key_by_hash(&token_hash(key)).await? {
        Some(k) if k.revoked_at.is_none() => Ok(Some(k)),
        _ => Err(ApiError::unauthorized(
            ErrorCode::InvalidApiKey,
            "the API key is unknown or revoked; ask the relay's operator for a key \
             (gts-webchat relay keys create)",
        )),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = key_of(&parts.headers, state).await?;
        let has_session = parts.headers.contains_key(SESSION_HEADER)
            || bearer(&parts.headers).is_some_and(|b| b.starts_with(TOKEN_PREFIX));
        let session = if has_session || key.is_none() {
            Some(
                crate::relay::extract::Auth::from_request_parts(parts, state)
                    .await?
                    .0,
            )
        } else {
            None
        };
        match (session, key) {
            (Some(s), Some(k)) if s.user.id != k.user_id => Err(ApiError::forbidden(
                ErrorCode::KeyOwnerMismatch,
                format!(
                    "the API key belongs to {:?}, the session to {:?}; use a key of your own",
                    k.owner_address, s.user.chat_address
                ),
            )),
            (Some(s), key) => Ok(Caller {
                user: s.user.clone(),
                session: Some(s),
                key,
            }),
            (None, Some(k)) => {
                let user = state
                    .store
                    .user_by_address(&k.owner_address)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            ErrorCode::InvalidApiKey,
                            "the API key's owner no longer exists",
                        )
                    })?;
                Ok(Caller {
                    user,
                    session: None,
                    key: Some(k),
                })
            }
            (None, None) => Err(ApiError::unauthorized(
                ErrorCode::Unauthorized,
                "no credentials: send a session token (X-PChat-Session) or an API key \
                 (Authorization: Bearer prk_…)",
            )),
        }
    }
}

/// The bridge's own credential, for `/api/v1/bridge/inbound`: an API key and nothing else,
/// checked before the body is read.
pub struct BridgeKey(pub ApiKeyRecord);

impl FromRequestParts<AppState> for BridgeKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match key_of(&parts.headers, state).await? {
            Some(k) => Ok(BridgeKey(k)),
            None => Err(ApiError::unauthorized(
                ErrorCode::ApiKeyRequired,
                "the bridge authenticates with its API key: Authorization: Bearer prk_…",
            )),
        }
    }
}
