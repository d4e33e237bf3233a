//! Login by emailed code, sessions, and the caller's own identity.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Kind;

/// `POST /api/v1/pchat/auth/request-code`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestCodeRequest {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free text such as "login"; recorded, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestCodeResponse {
    pub ok: bool,
    /// Whether the code was sent by email.
    pub emailed: bool,
    /// The code itself, only when the relay exposes codes (development, loopback without SMTP)
    /// and the caller is a program or the relay's own web app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_code: Option<String>,
    /// Names this request's code: send it back with verify-code. Only this caller has it, so
    /// nobody else's wrong guesses can void the code.
    #[serde(default)]
    pub login_id: String,
    /// Characters in the code (6 digits; 12 base32 characters while the email is under attack).
    #[serde(default)]
    pub code_length: u32,
    /// Seconds until the code expires.
    pub expires_in: u64,
}

/// `POST /api/v1/pchat/auth/verify-code`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyCodeRequest {
    pub email: String,
    pub code: String,
    /// The `login_id` request-code answered with. Without it, the newest code requested from
    /// the same network address is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Wanted chat address for a new identity; an email that verifies again keeps its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_visible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyCodeResponse {
    pub ok: bool,
    /// `pct_…`: send it as the `X-PChat-Session` header. Shown once; the relay keeps only a hash.
    pub session_token: String,
    pub chat_address: String,
    pub display_name: String,
    pub kind: Kind,
    pub public_visible: bool,
    /// RFC 3339 time the session expires.
    pub expires_at: String,
}

/// `GET /api/v1/webchat/me`: who the session belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub ok: bool,
    pub email: String,
    pub chat_address: String,
    pub display_name: String,
    pub kind: Kind,
    pub public_visible: bool,
    pub expires_at: String,
    /// Where this session's claim (poll without `after`) continues from.
    pub claim_cursor: String,
    /// The newest position in this identity's stream.
    pub stream_head: String,
}

/// Present (even as null) or absent: `Some(inner)` when the field was sent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /api/v1/webchat/language-prefs`: what is sent changes, what is left out stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LanguagePrefs {
    /// BCP 47 tag such as "es" or "pt-BR" that incoming text and voice are translated to;
    /// null or "" for none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub receive_language: Option<Option<String>>,
    /// Also receive the translation as a spoken clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_aloud: Option<bool>,
}

/// `GET/PUT /api/v1/webchat/language-prefs`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LanguagePrefsResponse {
    pub ok: bool,
    pub receive_language: Option<String>,
    pub read_aloud: bool,
}

/// `PUT /api/v1/webchat/profile`: what a person may change about themself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProfileUpdate {
    #[serde(default)]
    pub display_name: Option<String>,
    /// Listed in the directory or not.
    #[serde(default)]
    pub public_visible: Option<bool>,
}
