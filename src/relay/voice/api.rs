//! `POST /api/v1/webchat/transcribe` and `POST /api/v1/webchat/translate-text`.

use axum::Json;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::StatusCode;

use super::engines::EngineError;
use super::languages;
use crate::api::voice::{TranscribeForm, TranscribeResponse, TranslateRequest, TranslateResponse};
use crate::api::{ErrorBody, ErrorCode, MAX_TEXT_BYTES};
use crate::relay::AppState;
use crate::relay::error::{ApiError, ApiResult};
use crate::relay::extract::{Auth, JsonBody};
use crate::relay::language::normalize_language;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let (status, code) = match &e {
            EngineError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::EngineUnavailable,
            ),
            EngineError::UnsupportedPair { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::UnsupportedLanguagePair,
            ),
            EngineError::Refused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::EngineRefused)
            }
            EngineError::Failed { .. } => (StatusCode::BAD_GATEWAY, ErrorCode::EngineFailed),
            EngineError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::EngineFailed),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn language_arg(raw: Option<&str>, what: &str) -> ApiResult<Option<String>> {
    match raw {
        Some(r) => normalize_language(r)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("{what}: {e}"))),
        None => Ok(None),
    }
}

/// Transcribes a clip (multipart `file`, optional `language`).
#[utoipa::path(post, path = "/api/v1/webchat/transcribe", tag = "language",
    security(("session" = [])),
    request_body(content = TranscribeForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = TranscribeResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
pub async fn transcribe(
    State(state): State<AppState>,
    Auth(_session): Auth,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<TranscribeResponse>> {
    let engine = state.voice.transcriber().map_err(ApiError::from)?.clone();
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "send the clip as multipart/form-data with a field named \"file\": {}",
                e.body_text()
            ),
        )
    })?;
    let form = crate::relay::files::read_form(
        &mut multipart,
        &state.config.upload_dir,
        state.config.max_upload_bytes,
    )
    .await?;
    let language = language_arg(form.fields.get("language").map(String::as_str), "language")?;
    let Some(file) = form.file else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "the form has no field named \"file\"",
        ));
    };
    let t = state
        .voice
        .bounded(
            &engine.name(),
            engine.transcribe(&file.path, &file.name, &file.mime, language.as_deref()),
        )
        .await?;
    Ok(Json(TranscribeResponse {
        ok: true,
        transcript: t.text,
        language: t.language.or(language),
        duration_ms: t.duration_ms,
        engine: engine.name(),
    }))
}

/// Translates text into `target` (from `source`, or the language detected).
#[utoipa::path(post, path = "/api/v1/webchat/translate-text", tag = "language",
    security(("session" = [])),
    request_body = TranslateRequest,
    responses(
        (status = 200, body = TranslateResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
pub async fn translate_text(
    State(state): State<AppState>,
    Auth(_session): Auth,
    JsonBody(req): JsonBody<TranslateRequest>,
) -> ApiResult<Json<TranslateResponse>> {
    if req.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::too_large(format!(
            "text is over {} KiB",
            MAX_TEXT_BYTES / 1024
        )));
    }
    let target = language_arg(Some(&req.target), "target")?.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "give a target language, such as \"es\"",
        )
    })?;
    let source = match language_arg(req.source.as_deref(), "source")? {
        Some(s) => s,
        None => languages::detect(&req.text)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::EngineRefused,
                    "the language of the text could not be told; give it as source",
                )
            })?,
    };
    let engine = state.voice.translator().map_err(ApiError::from)?.clone();
    let text = if languages::same_language(&source, &target) {
        req.text.clone()
    } else {
        state
            .voice
            .bounded(
                &engine.name(),
                engine.translate(&req.text, &source, &target),
            )
            .await?
    };
    Ok(Json(TranslateResponse {
        ok: true,
        text,
        source: languages::primary(&source),
        target: languages::primary(&target),
        engine: engine.name(),
    }))
}
