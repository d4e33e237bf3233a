//! Language preferences: the language a person wants incoming text and voice in.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonBody};
use crate::api::auth::{LanguagePrefs, LanguagePrefsResponse};
use crate::api::{ErrorBody, ErrorCode};

/// A loose BCP 47 check: 2-3 letters, then up to three 1-8 alphanumeric subtags.
pub fn normalize_language(raw: &str) -> Result<Option<String>, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let mut parts = t.split('-');
    let primary = parts.next().unwrap_or("");
    let ok_primary =
        (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    let rest: Vec<&str> = parts.collect();
    let ok_rest = rest.len() <= 3
        && rest
            .iter()
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok_primary && ok_rest {
        Ok(Some(t.to_string()))
    } else {
        Err(format!(
            "{t:?} is not a language tag such as \"es\" or \"pt-BR\""
        ))
    }
}

/// The language incoming messages should be translated to.
#[utoipa::path(get, path = "/api/v1/webchat/language-prefs", tag = "language",
    security(("session" = [])),
    responses((status = 200, body = LanguagePrefsResponse), (status = 401, body = ErrorBody)))]
pub async fn get_prefs(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<LanguagePrefsResponse>> {
    let prefs = state.store.language_prefs(session.user.id).await?;
    Ok(Json(LanguagePrefsResponse {
        ok: true,
        receive_language: prefs.receive_language,
        read_aloud: prefs.read_aloud,
    }))
}

/// Sets (or, with null or "", clears) the receive language, and read-aloud; what is left out
/// stays as it was.
#[utoipa::path(put, path = "/api/v1/webchat/language-prefs", tag = "language",
    security(("session" = [])),
    request_body = LanguagePrefs,
    responses(
        (status = 200, body = LanguagePrefsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn put_prefs(
    State(state): State<AppState>,
    Auth(session): Auth,
    JsonBody(req): JsonBody<LanguagePrefs>,
) -> ApiResult<Json<LanguagePrefsResponse>> {
    let lang = match &req.receive_language {
        Some(l) => Some(
            normalize_language(l.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e))?,
        ),
        None => None,
    };
    state
        .store
        .set_language_prefs(session.user.id, lang, req.read_aloud)
        .await?;
    let prefs = state.store.language_prefs(session.user.id).await?;
    Ok(Json(LanguagePrefsResponse {
        ok: true,
        receive_language: prefs.receive_language,
        read_aloud: prefs.read_aloud,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(normalize_language("es").unwrap(), Some("es".into()));
        assert_eq!(normalize_language(" pt-BR ").unwrap(), Some("pt-BR".into()));
        assert_eq!(normalize_language("").unwrap(), None);
        assert!(normalize_language("e").is_err());
        assert!(normalize_language("english please").is_err());
        assert!(normalize_language("<script>").is_err());
    }
}
