//! The one error shape every relay endpoint answers with, and its stable codes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable, machine-readable error codes. Clients branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON.
    InvalidJson,
    /// The JSON is well formed but a field is missing or has the wrong type or value.
    InvalidRequest,
    /// A chat address does not follow the address rules.
    InvalidAddress,
    /// An email address is not valid.
    InvalidEmail,
    /// A poll cursor is not one this relay issued.
    InvalidCursor,
    /// A message has neither text nor attachments.
    EmptyMessage,
    /// No session token was sent.
    Unauthorized,
    /// The session token is unknown, logged out or expired.
    InvalidToken,
    /// The caller may not do this.
    Forbidden,
    /// `source` is not the caller's own address.
    SenderMismatch,
    /// `chat_address` is not the caller's own address.
    AddressMismatch,
    /// The chat address belongs to someone else.
    AddressTaken,
    /// No identity (or group) has that address.
    UnknownRecipient,
    /// Nothing exists at that path or id.
    NotFound,
    /// The path exists but not for that HTTP method.
    MethodNotAllowed,
    /// Body, text or file is over the limit.
    PayloadTooLarge,
    /// Too many requests; try again later.
    RateLimited,
    /// The login code is wrong.
    CodeInvalid,
    /// The login code has expired or was never requested.
    CodeExpired,
    /// Too many wrong tries; request a new code.
    CodeLocked,
    /// The relay cannot deliver login codes (no SMTP, codes not exposed).
    EmailNotConfigured,
    /// The SMTP server refused or could not be reached.
    MailFailed,
    /// This relay does not accept new registrations from that email.
    RegistrationClosed,
    /// Only a stream group's writers may post in it.
    StreamReadOnly,
    /// The caller is not a member of that group.
    NotMember,
    /// The request clashes with the current state (editing a deleted message, say).
    Conflict,
    /// An attachment names no uploaded file.
    InvalidAttachment,
    /// The relay's storage failed; the request was not carried out.
    StorageUnavailable,
    /// The request came from a web page whose origin this relay does not allow.
    OriginNotAllowed,
    /// The Host header names a host this relay does not serve (DNS rebinding guard).
    HostNotAllowed,
    /// The request line or headers are too long.
    UriTooLong,
    /// No engine for this job is set up on the relay (transcription, translation, speech).
    EngineUnavailable,
    /// The engine failed or timed out; trying again later may work.
    EngineFailed,
    /// The engine refused the input (not audio it can read, a language it does not have).
    EngineRefused,
    /// No installed translator handles this pair of languages.
    UnsupportedLanguagePair,
    /// A callback URL that is not an http(s) URL.
    InvalidUrl,
    /// A callback URL that points at this machine or a private network.
    UrlNotAllowed,
    /// The identity has as many callbacks as the relay allows.
    TooManyCallbacks,
    /// A phone number that is not in international form.
    InvalidPhone,
    /// Sending on that channel needs a PhoneRelay API key (`Authorization: Bearer …`).
    ApiKeyRequired,
    /// The API key is unknown or revoked.
    InvalidApiKey,
    /// The API key is not scoped to that phone id.
    PhoneIdNotAllowed,
    /// The API key and the session belong to different identities.
    KeyOwnerMismatch,
    /// No PhoneRelay bridge is configured (PHONE_RELAY_BRIDGE_URL) for sms, wa, tg, notify.
    BridgeUnavailable,
    /// The relay has no SMTP settings, so it cannot send email.
    EmailUnavailable,
    /// An unexpected failure in the relay. Never expected; report it.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        // Mirrors the serde names; a unit test keeps the two in step.
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidAddress => "invalid_address",
            ErrorCode::InvalidEmail => "invalid_email",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::SenderMismatch => "sender_mismatch",
            ErrorCode::AddressMismatch => "address_mismatch",
            ErrorCode::AddressTaken => "address_taken",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::CodeInvalid => "code_invalid",
            ErrorCode::CodeExpired => "code_expired",
            ErrorCode::CodeLocked => "code_locked",
            ErrorCode::EmailNotConfigured => "email_not_configured",
            ErrorCode::MailFailed => "mail_failed",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::StreamReadOnly => "stream_read_only",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidAttachment => "invalid_attachment",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::EngineUnavailable => "engine_unavailable",
            ErrorCode::EngineFailed => "engine_failed",
            ErrorCode::EngineRefused => "engine_refused",
            ErrorCode::UnsupportedLanguagePair => "unsupported_language_pair",
            ErrorCode::InvalidUrl => "invalid_url",
            ErrorCode::UrlNotAllowed => "url_not_allowed",
            ErrorCode::TooManyCallbacks => "too_many_callbacks",
            ErrorCode::InvalidPhone => "invalid_phone",
            ErrorCode::ApiKeyRequired => "api_key_required",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::PhoneIdNotAllowed => "phone_id_not_allowed",
            ErrorCode::KeyOwnerMismatch => "key_owner_mismatch",
            ErrorCode::BridgeUnavailable => "bridge_unavailable",
            ErrorCode::EmailUnavailable => "email_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code": "...", "message": "..."}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The request field that is wrong, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `{"ok": false, "error": {...}}`: the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub ok: bool,
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            ok: false,
            error: ErrorDetail {
                code,
                message: message.into(),
                field: None,
            },
        }
    }
}
