//! Request extractors that answer bad input with our JSON error shape, never axum's text.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::store::SessionInfo;
use crate::api::{ErrorCode, SESSION_HEADER, TOKEN_PREFIX};

/// Largest JSON body any endpoint takes.
pub const MAX_JSON_BODY: usize = 256 * 1024;
/// How much of an oversized body is read and discarded so the client, still sending, gets the
/// 413 instead of a reset connection. Past this the connection is simply closed.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads a body up to `limit` bytes. Over the limit, keeps reading (discarding) up to
/// DRAIN_LIMIT and returns `None`; a broken body returns `Err`.
pub async fn read_limited(
    body: axum::body::Body,
    limit: usize,
) -> Result<Option<bytes::Bytes>, ()> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                return Ok(None);
            }
        }
    }
    Ok((seen <= limit).then(|| buf.freeze()))
}

/// A JSON body, read whatever the Content-Type says (the seed's edit/delete/read examples send
/// none). An empty body reads as `{}` so optional-only requests need no body at all.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match read_limited(req.into_body(), MAX_JSON_BODY).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(ApiError::too_large(format!(
                    "request body is over {} KiB",
                    MAX_JSON_BODY / 1024
                )));
            }
            Err(()) => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    "the request body could not be read",
                ));
            }
        };
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}

/// Decodes JSON, telling syntax errors (`invalid_json`) from shape errors (`invalid_request`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                ErrorCode::InvalidJson,
                format!("the request body is not valid JSON: {e}"),
            ),
            Category::Data => ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("the request body does not have the expected fields: {e}"),
            ),
        }
    })
}

/// Query parameters, with our error shape on failure.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q).map(Query)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(q).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("bad query parameters: {e}"),
        )
    })
}

/// SHA-256 of a session token, the only form the relay stores or caches.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The caller's session, from `X-PChat-Session` (or `Authorization: Bearer pct_…`).
pub struct Auth(pub SessionInfo);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .or_else(|| {
                parts
                    .headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|v| v.starts_with(TOKEN_PREFIX))
            });
        let Some(token) = header else {
            return Err(ApiError::unauthorized(
                ErrorCode::Unauthorized,
                "no session token: send it in the X-PChat-Session header (log in with /api/v1/pchat/auth/verify-code)",
            ));
        };
        match state.session(&token_hash(token)).await? {
            Some(session) => Ok(Auth(session)),
            None => Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "the session token is unknown, logged out or expired; log in again",
            )),
        }
    }
}

/// Path parameters, with our error shape on failure.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("bad path: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::VerifyCodeRequest;
    use crate::api::messages::{PollRequest, SendRequest};
    use proptest::prelude::*;

    proptest! {
        /// Whatever bytes arrive, decoding answers a 400 with a stable code, never panics.
        #[test]
        fn bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for r in [
                parse_json::<SendRequest>(&bytes).err(),
                parse_json::<PollRequest>(&bytes).err(),
                parse_json::<VerifyCodeRequest>(&bytes).err(),
            ].into_iter().flatten() {
                prop_assert_eq!(r.status, axum::http::StatusCode::BAD_REQUEST);
                prop_assert!(matches!(r.code, ErrorCode::InvalidJson | ErrorCode::InvalidRequest));
            }
        }

        /// JSON-shaped input with arbitrary field values: decoded or refused, never a panic.
        #[test]
        fn json_shapes_never_panic(to in any::<String>(), text in any::<String>(), after in any::<String>(),
                                   wait in any::<f64>(), limit in any::<i64>()) {
            let body = serde_json::json!({"to": to, "text": text, "after": after, "wait": wait, "limit": limit});
            let bytes = body.to_string().into_bytes();
            let _ = parse_json::<SendRequest>(&bytes);
            let _ = parse_json::<PollRequest>(&bytes);
        }
    }
}
