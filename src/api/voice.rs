//! Speech to text and translation on request (the automatic flow rides on caption events).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/webchat/transcribe` (multipart `file`, optional `language`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct TranscribeForm {
    /// The clip: webm/opus, ogg, wav, mp3, m4a.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The spoken language (BCP 47), when known; detected otherwise.
    pub language: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TranscribeResponse {
    pub ok: bool,
    pub transcript: String,
    /// The spoken language (BCP 47 primary subtag), as given or detected.
    pub language: Option<String>,
    pub duration_ms: u64,
    pub engine: String,
}

/// `POST /api/v1/webchat/translate-text`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TranslateRequest {
    pub text: String,
    /// BCP 47 tag to translate to.
    pub target: String,
    /// BCP 47 tag of `text`; detected when left out.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TranslateResponse {
    pub ok: bool,
    pub text: String,
    pub source: String,
    pub target: String,
    pub engine: String,
}
